"""InteractVLM's training losses (REFERENCE.md section 1, "Training").

Terms and their default weights (``LossWeights``):
- token cross-entropy on the answer text (1);
- per-view focal BCE on the 2D contact masks, alpha 0.5, gamma 2, over the rendered region only (2);
- dice on the same masks (1);

How the mask terms combine is the release's (``CombinedLoss``, ``mask_terms``): the focal term is the mean
over each view's rendered pixels, then the mean over the views of an item, then over the items. The dice
is computed per view (``1 - (2 sum(p t) + 1e-5) / (sum p + sum t + 1e-5)``, scale 1), averaged over the
views of an item, and an item any of whose views has no positive (rendered) pixel scores 0 for dice
altogether, as the release returns early on such a view; then the mean over items.
- 3D vertex focal BCE on the lifted scores, alpha 0.25 (constant, the release's), gamma 2 (3), plus
  ``0.01 x mean score`` as a sparsity term;
- objects: focal x 0.5 + dice x 0.3 + MSE x 0.8 + L1 x 0.4 on per-point probabilities against soft
  ground truth. REFERENCE.md gives no focal parameters for objects; we use the vertex focal's
  (alpha 0.25, gamma 2), since both score the same kind of lifted 3D probabilities.

Focal loss (Lin et al.) in one line, for a prediction ``p`` and a target ``t`` in [0, 1]:
``alpha_t (1 - p_t)^gamma BCE(p, t)`` with ``p_t = p t + (1 - p)(1 - t)`` and
``alpha_t = alpha t + (1 - alpha)(1 - t)``: for binary targets these are the textbook ``p_t`` and
``alpha_t``; for soft targets they interpolate linearly between the two cases.

Every function returns a 0-d float32 tensor that stays attached to its inputs' graph, even when
nothing is supervised (an all-invalid mask, no unignored token): the value is then 0 and the
gradient exactly 0, never NaN, so a batch without supervision for one term needs no special case in
the training loop. Inputs in bf16 (training runs in bf16) are cast to float32 first.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from engine.errors import InputError

IGNORE_INDEX = -100
MASK_ALPHA, MASK_GAMMA = 0.5, 2.0
VERTEX_ALPHA, VERTEX_GAMMA = 0.25, 2.0
OBJECT_ALPHA, OBJECT_GAMMA = 0.25, 2.0  # not in REFERENCE.md: the vertex focal's values (module docstring)
PROBABILITY_EPS = 1e-6  # lifted scores are clamped to [eps, 1 - eps] so log() stays finite
DICE_EPS = 1.0
VIEW_DICE_EPS = 1e-5  # CombinedLoss.compute_dice_loss


@dataclass(frozen=True)
class LossWeights:
    """Weights of each term in ``LossTerms.total`` (REFERENCE.md section 1 defaults)."""

    token: float = 1.0
    mask_focal: float = 2.0
    mask_dice: float = 1.0
    vertex_focal: float = 3.0
    sparsity: float = 0.01
    object_focal: float = 0.5
    object_dice: float = 0.3
    object_mse: float = 0.8
    object_l1: float = 0.4


@dataclass(frozen=True)
class LossTerms:
    """Unweighted loss terms, each a 0-d float32 tensor, and ``total`` = sum of weight x term.

    Terms a model does not use are 0 (e.g. ``vertex_focal`` for the object model, the ``object_*``
    terms for the human model).
    """

    token: torch.Tensor
    mask_focal: torch.Tensor
    mask_dice: torch.Tensor
    vertex_focal: torch.Tensor
    sparsity: torch.Tensor
    object_focal: torch.Tensor
    object_dice: torch.Tensor
    object_mse: torch.Tensor
    object_l1: torch.Tensor
    total: torch.Tensor

    def scalars(self) -> dict[str, float]:
        """Plain floats for logging."""
        return {field.name: float(getattr(self, field.name).detach()) for field in fields(self)}


# ---- single terms ---------------------------------------------------------------------------------
def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: ``logits`` (B, L, Vocab) at position t predict ``labels`` (B, L) at t+1.

    Labels equal to -100 (prompt, image and padding positions) are ignored; the mean runs over the
    remaining positions only, and is 0 when none remains.
    """
    _check(logits.ndim == 3 and labels.shape == logits.shape[:2],
           f"token logits must be (B, L, Vocab) and labels (B, L); got {tuple(logits.shape)} and {tuple(labels.shape)}")
    predicted = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    target = labels[:, 1:].reshape(-1).long()
    total = F.cross_entropy(predicted, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)


def focal_terms(probability: torch.Tensor, targets: torch.Tensor, bce: torch.Tensor, alpha: float,
                gamma: float) -> torch.Tensor:
    """Element-wise ``alpha_t (1 - p_t)^gamma bce`` (module docstring gives ``p_t`` and ``alpha_t``)."""
    p_t = probability * targets + (1 - probability) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t).pow(gamma) * bce


def masked_focal_bce(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None,
                     alpha: float = MASK_ALPHA, gamma: float = MASK_GAMMA) -> torch.Tensor:
    """Focal BCE of mask ``logits`` (N, H, W) against {0, 1} ``targets`` (N, H, W), averaged over the
    ``valid`` (N, H, W) pixels of the whole batch: the rendered region, where a pixel maps to the body
    or object. ``valid=None`` means every pixel.

    Pixels outside ``valid`` are replaced by a constant before any arithmetic, so their logits
    (even inf or NaN) cannot reach the value, and their gradient is exactly 0. With no valid pixel
    the loss is 0 (a sum over nothing divided by max(count, 1)), with zero gradient.
    """
    valid = _valid_mask(valid, logits, targets)
    logits = torch.where(valid, logits.float(), torch.zeros((), device=logits.device))
    targets = torch.where(valid, targets.float(), torch.zeros((), device=targets.device))
    # BCE from logits is the stable form (log-sum-exp); sigmoid only feeds the focal modulation.
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    loss = focal_terms(torch.sigmoid(logits), targets, bce, alpha, gamma)
    return torch.where(valid, loss, torch.zeros((), device=loss.device)).sum() / valid.sum().clamp(min=1)


def soft_dice(probabilities: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None,
              eps: float = DICE_EPS) -> torch.Tensor:
    """Soft dice of ``probabilities`` against ``targets`` (N, ...), per item, then the mean over items.

    Per item: ``1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps)`` over its (valid) elements. The
    smoothing ``eps`` (1 by default, the "+1" of LISA's dice) keeps an item with an empty target and
    an empty prediction at loss 0 instead of 0/0, and softens the loss for tiny masks.
    """
    _check(probabilities.shape == targets.shape,
           f"dice needs equal shapes; got {tuple(probabilities.shape)} and {tuple(targets.shape)}")
    if probabilities.shape[0] == 0:
        return probabilities.float().sum()  # no item: 0, still attached
    valid = _valid_mask(valid, probabilities, targets)
    p = torch.where(valid, probabilities.float(), torch.zeros((), device=probabilities.device)).flatten(1)
    t = torch.where(valid, targets.float(), torch.zeros((), device=targets.device)).flatten(1)
    score = (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)
    return (1 - score).mean()


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None,
              eps: float = DICE_EPS) -> torch.Tensor:
    """Soft dice (``soft_dice``) on ``sigmoid(logits)``; each mask (first axis) is one item.

    Invalid logits are zeroed before the sigmoid so that inf/NaN there cannot leak into the gradient.
    """
    if valid is not None:
        logits = torch.where(_valid_mask(valid, logits, targets), logits.float(), torch.zeros((), device=logits.device))
    return soft_dice(torch.sigmoid(logits.float()), targets, valid, eps)


def probability_focal_bce(scores: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Mean focal BCE of probabilities ``scores`` against ``targets`` in [0, 1], same shape.

    Scores are clamped to [1e-6, 1 - 1e-6]: the lift can output exactly 0 or 1, where log() is
    infinite. A score already at the clamp gets no gradient, which is what the clamp is for.
    """
    _check(scores.shape == targets.shape,
           f"scores and targets must have the same shape; got {tuple(scores.shape)} and {tuple(targets.shape)}")
    if scores.numel() == 0:
        return scores.float().sum()
    p, t, bce = _clamped_bce(scores, targets)
    return focal_terms(p, t, bce, alpha, gamma).mean()


def vertex_focal_loss(scores: torch.Tensor, targets: torch.Tensor, alpha: float = VERTEX_ALPHA,
                      gamma: float = VERTEX_GAMMA) -> torch.Tensor:
    """3D focal BCE of lifted vertex ``scores`` (B, V) in [0, 1] against {0, 1} ``targets`` (B, V), as the
    release's ``HumanContact3DLoss``: ``alpha (1 - exp(-bce))^gamma bce`` with one constant alpha for
    positives and negatives alike (not the textbook alpha_t), mean over every vertex. Scores are clamped
    to [1e-6, 1 - 1e-6] so that log() stays finite."""
    _check(scores.shape == targets.shape,
           f"scores and targets must have the same shape; got {tuple(scores.shape)} and {tuple(targets.shape)}")
    if scores.numel() == 0:
        return scores.float().sum()
    _, _, bce = _clamped_bce(scores, targets)
    return (alpha * (1 - torch.exp(-bce)).pow(gamma) * bce).mean()


def _clamped_bce(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores clamped to [1e-6, 1 - 1e-6] (log() stays finite), float targets, and the elementwise BCE."""
    p = scores.float().clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    t = targets.float()
    return p, t, -(t * torch.log(p) + (1 - t) * torch.log1p(-p))


def sparsity(scores: torch.Tensor) -> torch.Tensor:
    """Mean predicted score: weighted by 0.01 it pushes unsupported vertices towards 0."""
    return scores.float().mean() if scores.numel() else scores.float().sum()


def object_point_losses(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Focal, dice, MSE and L1 of per-point probabilities ``scores`` (B, P) against soft ground truth
    ``targets`` (B, P) in [0, 1]. Dice treats each object (row) as one item."""
    _check(scores.shape == targets.shape and scores.ndim == 2,
           f"point scores and targets must both be (B, P); got {tuple(scores.shape)} and {tuple(targets.shape)}")
    p, t = scores.float(), targets.float()
    return {"object_focal": probability_focal_bce(p, t, OBJECT_ALPHA, OBJECT_GAMMA),
            "object_dice": soft_dice(p, t),
            "object_mse": F.mse_loss(p, t) if p.numel() else p.sum(),
            "object_l1": F.l1_loss(p, t) if p.numel() else p.sum()}


# ---- entry points ---------------------------------------------------------------------------------
def human_contact_losses(token_logits: torch.Tensor, token_labels: torch.Tensor, mask_logits: torch.Tensor,
                         mask_targets: torch.Tensor, mask_valid: torch.Tensor | None, vertex_scores: torch.Tensor,
                         vertex_targets: torch.Tensor, weights: LossWeights = LossWeights()) -> LossTerms:
    """All human-contact terms.

    token_logits (B, L, Vocab), token_labels (B, L) with -100 ignored; mask_logits, mask_targets and
    mask_valid (B, V, H, W) for the V rendered views (``mask_valid=None``: every pixel); vertex_scores
    and vertex_targets (B, Nv): the lifted scores in [0, 1] and the binary ground truth.
    """
    zero = _zero_like(vertex_scores)
    terms = {"token": token_cross_entropy(token_logits, token_labels),
             **mask_terms(mask_logits, mask_targets, mask_valid),
             "vertex_focal": vertex_focal_loss(vertex_scores, vertex_targets),
             "sparsity": sparsity(vertex_scores),
             "object_focal": zero, "object_dice": zero, "object_mse": zero, "object_l1": zero}
    return combine(terms, weights)


def object_affordance_losses(token_logits: torch.Tensor, token_labels: torch.Tensor, mask_logits: torch.Tensor | None,
                             mask_targets: torch.Tensor | None, mask_valid: torch.Tensor | None,
                             point_scores: torch.Tensor, point_targets: torch.Tensor,
                             weights: LossWeights = LossWeights()) -> LossTerms:
    """All object-affordance terms.

    The object model localises in the 2D renders of the point cloud just as the human model does on
    the body, so when 2D ground truth is given (``mask_targets``, rendered from the soft point values)
    its masks get the same focal and dice terms with the same weights (``mask_focal``, ``mask_dice``).
    With ``mask_targets=None`` only the token and the 3D point terms count. Shapes as in
    ``human_contact_losses``; point_scores and point_targets are (B, P) in [0, 1].
    """
    zero = _zero_like(point_scores)
    masks = (mask_terms(mask_logits, mask_targets, mask_valid) if mask_targets is not None
             else {"mask_focal": zero, "mask_dice": zero})
    terms = {"token": token_cross_entropy(token_logits, token_labels), **masks,
             "vertex_focal": zero, "sparsity": zero, **object_point_losses(point_scores, point_targets)}
    return combine(terms, weights)


def mask_terms(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Focal BCE and dice of (B, V, H, W) masks, combined as the release does (module docstring)."""
    _check(logits is not None and logits.ndim == 4 and targets.shape == logits.shape,
           "mask logits and targets must both be (B, V, H, W); got "
           f"{None if logits is None else tuple(logits.shape)} and {tuple(targets.shape)}")
    valid = _valid_mask(valid, logits, targets)
    if logits.shape[0] == 0:
        zero = logits.float().sum()
        return {"mask_focal": zero, "mask_dice": zero}
    return {"mask_focal": per_view_focal(logits, targets, valid).mean(),
            "mask_dice": per_view_dice(logits, targets, valid).mean()}


def per_view_focal(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                   alpha: float = MASK_ALPHA, gamma: float = MASK_GAMMA) -> torch.Tensor:
    """(B,) per item: the mean over its V views of each view's mean focal BCE over its valid pixels
    (``alpha (1 - exp(-bce))^gamma bce``); a view without a valid pixel contributes 0."""
    logits = torch.where(valid, logits.float(), torch.zeros((), device=logits.device))
    targets = torch.where(valid, targets.float(), torch.zeros((), device=targets.device))
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    focal = torch.where(valid, alpha * (1 - torch.exp(-bce)).pow(gamma) * bce, torch.zeros((), device=bce.device))
    per_view = focal.flatten(2).sum(-1) / valid.flatten(2).sum(-1).clamp(min=1)
    return per_view.mean(1)


def per_view_dice(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                  eps: float = VIEW_DICE_EPS) -> torch.Tensor:
    """(B,) per item: the mean over its V views of ``1 - (2 sum(p t) + eps) / (sum p + sum t + eps)`` over
    valid pixels, or 0 for an item with a view that has no positive valid pixel (the release's early return)."""
    p = torch.where(valid, torch.sigmoid(torch.where(valid, logits.float(), torch.zeros((), device=logits.device))),
                    torch.zeros((), device=logits.device)).flatten(2)
    t = torch.where(valid, targets.float(), torch.zeros((), device=targets.device)).flatten(2)
    per_view = 1 - (2 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)
    usable = (t.sum(-1) > 0).all(1)
    return torch.where(usable, per_view.mean(1), torch.zeros((), device=per_view.device))


def combine(terms: dict[str, torch.Tensor], weights: LossWeights) -> LossTerms:
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return LossTerms(**terms, total=total)


# ---- helpers --------------------------------------------------------------------------------------
def _valid_mask(valid: torch.Tensor | None, *like: torch.Tensor) -> torch.Tensor:
    shape = like[0].shape
    _check(all(x.shape == shape for x in like), f"shapes differ: {[tuple(x.shape) for x in like]}")
    if valid is None:
        return torch.ones(shape, dtype=torch.bool, device=like[0].device)
    _check(valid.shape == shape, f"valid mask must have shape {tuple(shape)}, got {tuple(valid.shape)}")
    return valid.bool()


def _zero_like(reference: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=torch.float32, device=reference.device)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)
