"""InteractVLM training losses (REFERENCE.md section 1) against values computed by hand."""
from __future__ import annotations

import math
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F

from engine.contact.losses import (LossTerms, LossWeights, dice_loss, human_contact_losses, mask_terms, masked_focal_bce,
                                   object_affordance_losses, object_point_losses, soft_dice, sparsity,
                                   token_cross_entropy, vertex_focal_loss)
from engine.errors import InputError

TOL = 1e-6


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def focal(p: float, t: float, alpha: float, gamma: float) -> float:
    """Textbook focal BCE of one probability, written out independently of the module."""
    bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return alpha_t * (1 - p_t) ** gamma * bce


# ---- token cross-entropy ----------------------------------------------------------------------------
def test_token_cross_entropy_matches_manual_log_softmax_with_shift_and_ignore():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, dtype=torch.float64)
    labels = torch.tensor([[-100, 3, 1, -100], [-100, -100, 4, 0]])
    # position t predicts label t+1: (b, t, label) pairs that count
    pairs = [(0, 0, 3), (0, 1, 1), (1, 1, 4), (1, 2, 0)]
    expected = 0.0
    for b, t, label in pairs:
        row = logits[b, t].tolist()
        log_z = math.log(sum(math.exp(v) for v in row))
        expected += -(row[label] - log_z)
    expected /= len(pairs)
    assert token_cross_entropy(logits, labels).item() == pytest.approx(expected, abs=TOL)


def test_token_cross_entropy_all_ignored_is_zero_with_zero_gradient():
    logits = torch.randn(1, 3, 4, requires_grad=True)
    loss = token_cross_entropy(logits, torch.full((1, 3), -100))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_token_cross_entropy_rejects_mismatched_shapes():
    with pytest.raises(InputError, match="token logits"):
        token_cross_entropy(torch.zeros(1, 3, 4), torch.zeros(1, 2, dtype=torch.long))


# ---- mask focal BCE ----------------------------------------------------------------------------------
def test_masked_focal_bce_two_pixels_by_hand():
    logits = torch.tensor([[[2.0, -1.0]]])
    targets = torch.tensor([[[1.0, 0.0]]])
    valid = torch.ones(1, 1, 2, dtype=torch.bool)
    p1, p2 = sigmoid(2.0), sigmoid(-1.0)
    positive = 0.5 * (1 - p1) ** 2 * -math.log(p1)
    negative = 0.5 * p2 ** 2 * -math.log(1 - p2)
    assert masked_focal_bce(logits, targets, valid).item() == pytest.approx((positive + negative) / 2, abs=TOL)


def test_masked_focal_bce_alpha_weights_positives_and_negatives():
    logits = torch.tensor([[[0.7, 0.3, -1.2]]])
    targets = torch.tensor([[[1.0, 0.0, 0.0]]])
    value = masked_focal_bce(logits, targets, None, alpha=0.25, gamma=0.0).item()
    expected = (0.25 * -math.log(sigmoid(0.7)) + 0.75 * -math.log(1 - sigmoid(0.3))
                + 0.75 * -math.log(1 - sigmoid(-1.2))) / 3
    assert value == pytest.approx(expected, abs=TOL)


def test_masked_focal_bce_gamma_zero_alpha_half_is_half_bce_over_valid():
    torch.manual_seed(1)
    logits = torch.randn(3, 6, 5) * 4
    targets = (torch.rand(3, 6, 5) > 0.5).float()
    valid = torch.rand(3, 6, 5) > 0.3
    bce = F.binary_cross_entropy_with_logits(logits[valid], targets[valid])
    value = masked_focal_bce(logits, targets, valid, alpha=0.5, gamma=0.0)
    assert value.item() == pytest.approx(0.5 * bce.item(), abs=TOL)


def test_invalid_pixels_change_nothing_and_get_exactly_zero_gradient():
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 4)
    targets = (torch.rand(2, 4, 4) > 0.5).float()
    valid = torch.rand(2, 4, 4) > 0.4
    wild = logits.clone()
    count = int((~valid).sum())
    wild[~valid] = torch.tensor([1e4, -1e4, float("inf"), float("nan")]).repeat(count)[:count]
    wild.requires_grad_(True)
    for loss_fn in (masked_focal_bce, dice_loss):
        base = loss_fn(logits, targets, valid)
        changed = loss_fn(wild, targets, valid)
        assert changed.item() == pytest.approx(base.item(), abs=TOL)
        wild.grad = None
        changed.backward()
        assert torch.all(wild.grad[~valid] == 0)
        assert torch.isfinite(wild.grad).all() and wild.grad[valid].abs().sum() > 0


def test_all_invalid_mask_is_zero_and_nan_free():
    logits = torch.randn(2, 3, 3, requires_grad=True)
    targets = torch.ones(2, 3, 3)
    valid = torch.zeros(2, 3, 3, dtype=torch.bool)
    for loss_fn in (masked_focal_bce, dice_loss):
        loss = loss_fn(logits, targets, valid)
        logits.grad = None
        loss.backward()
        assert loss.item() == 0.0
        assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_masked_focal_bce_is_stable_for_huge_logits():
    logits = torch.tensor([[[80.0, -80.0, 80.0]]], requires_grad=True)
    targets = torch.tensor([[[1.0, 0.0, 0.0]]])
    loss = masked_focal_bce(logits, targets)
    loss.backward()
    # the wrong pixel: BCE = 80 (from logits, no log(0)), p_t ~ 0, alpha_t 0.5 -> 40, averaged over 3
    assert loss.item() == pytest.approx(40 / 3, abs=1e-4)
    assert torch.isfinite(logits.grad).all()


# ---- dice --------------------------------------------------------------------------------------------
def test_dice_by_hand_two_items():
    logits = torch.tensor([[0.0, 0.0], [math.log(3), -math.log(3)]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # item 1: p = (.5, .5): 1 - (2 * .5 + 1) / (1 + 1 + 1) = 1/3; item 2: p = (.75, .25): 1 - 3/4 = 1/4
    assert dice_loss(logits, targets).item() == pytest.approx((1 / 3 + 1 / 4) / 2, abs=TOL)


def test_dice_restricted_to_valid_and_smoothing():
    logits = torch.tensor([[0.0, 5.0, -2.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0]])
    valid = torch.tensor([[True, False, True]])
    p0, p2 = 0.5, sigmoid(-2.0)
    expected = 1 - (2 * p0 + 1) / (p0 + p2 + 1 + 1)
    assert dice_loss(logits, targets, valid).item() == pytest.approx(expected, abs=TOL)
    expected_eps = 1 - (2 * p0 + 0.1) / (p0 + p2 + 1 + 0.1)
    assert dice_loss(logits, targets, valid, eps=0.1).item() == pytest.approx(expected_eps, abs=TOL)


def test_dice_empty_target_and_empty_prediction_is_zero():
    probabilities = torch.zeros(2, 4)
    assert soft_dice(probabilities, torch.zeros(2, 4)).item() == 0.0
    assert soft_dice(torch.zeros(0, 4), torch.zeros(0, 4)).item() == 0.0


# ---- vertex and object terms ------------------------------------------------------------------------
def release_vertex_focal(p: float, t: int) -> float:
    """HumanContact3DLoss: bce, pt = exp(-bce), 0.25 (1 - pt)^2 bce, the SAME 0.25 for negatives."""
    bce = -math.log(p) if t else -math.log(1 - p)
    return 0.25 * (1 - math.exp(-bce)) ** 2 * bce


def test_vertex_focal_by_hand_and_sparsity():
    scores = torch.tensor([[0.8, 0.3], [0.1, 0.6]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expected = sum(release_vertex_focal(p, t) for p, t in [(0.8, 1), (0.3, 0), (0.1, 1), (0.6, 1)]) / 4
    # the negative (0.3, 0) weighs 0.25, not the textbook 0.75: 0.25 * 0.3^2 * -log(0.7)
    assert release_vertex_focal(0.3, 0) == pytest.approx(0.25 * 0.09 * -math.log(0.7))
    assert vertex_focal_loss(scores, targets).item() == pytest.approx(expected, abs=TOL)
    assert sparsity(scores).item() == pytest.approx(0.45, abs=TOL)


def test_vertex_focal_clamps_exact_zero_and_one():
    scores = torch.tensor([[0.0, 1.0]])
    value = vertex_focal_loss(scores, torch.tensor([[1.0, 0.0]]))
    low, high = torch.tensor([1e-6, 1 - 1e-6]).tolist()  # the clamp bounds as float32 holds them
    expected = (release_vertex_focal(low, 1) + release_vertex_focal(high, 0)) / 2
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_object_point_losses_by_hand_with_soft_targets():
    scores = torch.tensor([[0.2, 0.9]])
    targets = torch.tensor([[0.0, 0.5]])
    terms = object_point_losses(scores, targets)
    # soft target 0.5: p_t and alpha_t interpolate linearly between the two binary cases
    expected_focal = (focal(0.2, 0.0, 0.25, 2) + focal(0.9, 0.5, 0.25, 2)) / 2
    assert terms["object_focal"].item() == pytest.approx(expected_focal, abs=TOL)
    assert terms["object_dice"].item() == pytest.approx(1 - (2 * 0.45 + 1) / (1.1 + 0.5 + 1), abs=TOL)
    assert terms["object_mse"].item() == pytest.approx((0.04 + 0.16) / 2, abs=TOL)
    assert terms["object_l1"].item() == pytest.approx((0.2 + 0.4) / 2, abs=TOL)


def test_empty_targets_are_nan_free():
    scores = torch.full((2, 5), 0.3, requires_grad=True)
    zeros = torch.zeros(2, 5)
    values = [vertex_focal_loss(scores, zeros), sparsity(scores), *object_point_losses(scores, zeros).values()]
    total = sum(values)
    total.backward()
    assert all(math.isfinite(v.item()) for v in values)
    assert torch.isfinite(scores.grad).all()


# ---- entry points ------------------------------------------------------------------------------------
def human_inputs(seed: int = 0, requires_grad: bool = True) -> dict:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 7, (2, 5), generator=generator)
    labels[:, :2] = -100
    inputs = {"token_logits": torch.randn(2, 5, 7, generator=generator),
              "token_labels": labels,
              "mask_logits": torch.randn(2, 4, 6, 6, generator=generator),
              "mask_targets": (torch.rand(2, 4, 6, 6, generator=generator) > 0.6).float(),
              "mask_valid": torch.rand(2, 4, 6, 6, generator=generator) > 0.3,
              "vertex_scores": torch.rand(2, 30, generator=generator) * 0.98 + 0.01,
              "vertex_targets": (torch.rand(2, 30, generator=generator) > 0.7).float()}
    for name in ("token_logits", "mask_logits", "vertex_scores"):
        inputs[name].requires_grad_(requires_grad)
    return inputs


def weighted_sum(terms: LossTerms, weights: LossWeights) -> float:
    return sum(getattr(weights, f.name) * getattr(terms, f.name).item() for f in fields(LossWeights))


def test_loss_weights_defaults_are_the_reference_values():
    assert LossWeights() == LossWeights(token=1, mask_focal=2, mask_dice=1, vertex_focal=3, sparsity=0.01,
                                        object_focal=0.5, object_dice=0.3, object_mse=0.8, object_l1=0.4)


@pytest.mark.parametrize("weights", [LossWeights(), LossWeights(token=0.5, mask_dice=2.5, sparsity=1.0)])
def test_human_total_is_weighted_sum_and_gradients_flow(weights):
    inputs = human_inputs()
    terms = human_contact_losses(**inputs, weights=weights)
    assert terms.total.item() == pytest.approx(weighted_sum(terms, weights), abs=TOL)
    assert terms.object_focal.item() == terms.object_l1.item() == 0.0
    assert terms.total.ndim == 0 and terms.total.dtype == torch.float32
    terms.total.backward()
    for name in ("token_logits", "mask_logits", "vertex_scores"):
        grad = inputs[name].grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert torch.all(inputs["mask_logits"].grad[~inputs["mask_valid"]] == 0)
    assert set(terms.scalars()) == {f.name for f in fields(LossTerms)}


def test_human_terms_combine_per_view_then_per_item_as_the_release():
    inputs = human_inputs(requires_grad=False)
    terms = human_contact_losses(**inputs)
    logits, targets, valid = inputs["mask_logits"], inputs["mask_targets"], inputs["mask_valid"]
    focal, dice = [], []
    for item in range(logits.shape[0]):  # the release's loops: item, then view, then the item's mean
        views_focal, views_dice, early_zero = [], [], False
        for view in range(logits.shape[1]):
            keep = valid[item, view]
            x, t = logits[item, view][keep], targets[item, view][keep]
            bce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
            views_focal.append((0.5 * (1 - torch.exp(-bce)) ** 2 * bce).mean() if x.numel() else torch.tensor(0.0))
            if t.numel() == 0 or t.sum() == 0:
                early_zero = True
            p = torch.sigmoid(x)
            views_dice.append(1 - (2 * (p * t).sum() + 1e-5) / (p.sum() + t.sum() + 1e-5))
        focal.append(torch.stack(views_focal).mean())
        dice.append(torch.tensor(0.0) if early_zero else torch.stack(views_dice).mean())
    assert terms.mask_focal.item() == pytest.approx(torch.stack(focal).mean().item(), abs=TOL)
    assert terms.mask_dice.item() == pytest.approx(torch.stack(dice).mean().item(), abs=TOL)
    assert terms.vertex_focal.item() == pytest.approx(
        vertex_focal_loss(inputs["vertex_scores"], inputs["vertex_targets"]).item(), abs=TOL)


def test_dice_is_zero_for_an_item_with_an_empty_view():
    logits = torch.tensor([[[[2.0, -1.0]], [[0.5, 0.5]]], [[[2.0, -1.0]], [[0.5, 0.5]]]])  # (2 items, 2 views, 1, 2)
    targets = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]], [[[1.0, 0.0]], [[0.0, 0.0]]]])  # item 2: view 2 empty
    terms = mask_terms(logits, targets, None)
    p1, p2 = torch.sigmoid(torch.tensor([2.0, -1.0])), torch.sigmoid(torch.tensor([0.5, 0.5]))
    view1 = 1 - (2 * p1[0] + 1e-5) / (p1.sum() + 1 + 1e-5)
    view2 = 1 - (2 * p2[1] + 1e-5) / (p2.sum() + 1 + 1e-5)
    assert terms["mask_dice"].item() == pytest.approx(((view1 + view2) / 2 + 0.0).item() / 2, abs=1e-6)


def test_object_total_with_and_without_masks():
    inputs = human_inputs(seed=3)
    points = torch.rand(2, 16, requires_grad=True)
    targets = torch.rand(2, 16)
    with_masks = object_affordance_losses(inputs["token_logits"], inputs["token_labels"], inputs["mask_logits"],
                                          inputs["mask_targets"], inputs["mask_valid"], points, targets,
                                          LossWeights())
    assert with_masks.total.item() == pytest.approx(weighted_sum(with_masks, LossWeights()), abs=TOL)
    assert with_masks.mask_focal.item() > 0 and with_masks.vertex_focal.item() == 0.0
    without = object_affordance_losses(inputs["token_logits"], inputs["token_labels"], None, None, None, points,
                                       targets, LossWeights())
    assert without.mask_focal.item() == without.mask_dice.item() == 0.0
    assert without.total.item() == pytest.approx(weighted_sum(without, LossWeights()), abs=TOL)
    without.total.backward()
    assert torch.isfinite(points.grad).all() and points.grad.abs().sum() > 0


def test_all_invalid_batch_is_nan_free_end_to_end():
    inputs = human_inputs(seed=4)
    inputs["mask_valid"] = torch.zeros_like(inputs["mask_valid"])
    inputs["token_labels"] = torch.full_like(inputs["token_labels"], -100)
    inputs["vertex_targets"] = torch.zeros_like(inputs["vertex_targets"])
    terms = human_contact_losses(**inputs)
    terms.total.backward()
    assert terms.mask_focal.item() == terms.mask_dice.item() == terms.token.item() == 0.0
    assert math.isfinite(terms.total.item())
    assert torch.equal(inputs["mask_logits"].grad, torch.zeros_like(inputs["mask_logits"]))


def test_bf16_inputs_give_float32_losses():
    inputs = human_inputs(seed=5, requires_grad=False)
    inputs = {k: v.bfloat16() if v.is_floating_point() else v for k, v in inputs.items()}
    terms = human_contact_losses(**inputs)
    assert all(getattr(terms, f.name).dtype == torch.float32 for f in fields(LossTerms))
    assert math.isfinite(terms.total.item())


def test_mask_shape_mismatch_is_an_input_error():
    inputs = human_inputs(requires_grad=False)
    inputs["mask_targets"] = inputs["mask_targets"][:, :3]
    with pytest.raises(InputError, match=r"\(B, V, H, W\)"):
        human_contact_losses(**inputs)
