"""Quality control for crowdsourced labels: agreement between annotators and label aggregation.

Contact labels are boolean masks over the V vertices of a body mesh; a task annotated by A workers
gives a ``(A, V)`` mask array. As in DAMON (the DECO dataset), agreement is measured with Fleiss'
kappa per image (subjects = vertices, raters = annotators, two categories: contact / no contact)
and with vertex-set IoU. Masks are aggregated by (weighted) majority vote.

Object affordance labels are soft per-point values in [0, 1], a ``(A, N)`` array; they are
aggregated with a weighted mean and can be binarised to reuse the mask metrics.

Pure numpy. Every function raises ``InputError`` for malformed input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import InputError

# Weighted votes whose difference is within this fraction of the total weight count as a tie:
# float sums such as 0.2 + 0.7 vs 0.9 differ by rounding only and must not break the tie.
_TIE_RTOL = 1e-12


def _bool_array(x, name: str, ndim: int, what: str) -> np.ndarray:
    """Return ``x`` as a bool array of ``ndim`` dimensions; accepts bool or 0/1 numbers.

    ``what`` names the axes for the error message, e.g. ``"(annotators, vertices)"``.
    """
    arr = np.asarray(x)
    if arr.ndim != ndim:
        raise InputError(f"{name} must be a {ndim}-D {what} array, got {arr.ndim}-D shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name} must be boolean or 0/1 numbers, got dtype {arr.dtype}")
    if not np.all((arr == 0) | (arr == 1)):
        raise InputError(f"{name} must hold only 0/1 (or True/False) values; NaN and other numbers are not accepted")
    return arr.astype(bool)


def _masks(masks) -> np.ndarray:
    """Validate ``(A, V)`` contact masks with at least one vertex; returns a bool array."""
    arr = _bool_array(masks, "masks", 2, "(annotators, vertices)")
    if arr.shape[1] == 0:
        raise InputError(f"masks must cover at least one vertex, got shape {arr.shape}")
    return arr


def _unit_values(values, name: str, ndims: tuple[int, ...], what: str) -> np.ndarray:
    """Validate finite float values in [0, 1] with one of ``ndims`` dimensions; returns float64."""
    arr = np.asarray(values)
    if arr.ndim not in ndims:
        raise InputError(f"{name} must be a {what} array, got {arr.ndim}-D shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite; found NaN or inf")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise InputError(f"{name} must lie in [0, 1], got range [{arr.min():g}, {arr.max():g}]")
    return arr


def _weights(weights, annotators: int) -> np.ndarray:
    """Validate per-annotator weights, shape ``(A,)``; ``None`` means equal weights.

    Weights must be finite and non-negative with a positive total. Returns float64 ``(A,)``.
    """
    if weights is None:
        w = np.ones(annotators, dtype=np.float64)
    else:
        arr = np.asarray(weights)
        if arr.ndim != 1 or arr.shape[0] != annotators:
            raise InputError(f"weights must have shape ({annotators},), one per annotator, got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise InputError(f"weights must be numeric, got dtype {arr.dtype}")
        w = arr.astype(np.float64)
        if not np.all(np.isfinite(w)):
            raise InputError("weights must be finite; found NaN or inf")
        if np.any(w < 0):
            raise InputError(f"weights must be non-negative, got minimum {w.min():g}")
    if not w.sum() > 0:
        raise InputError("total weight must be positive (no annotators, or all weights are zero)")
    return w


def vertex_iou(a, b) -> float:
    """IoU of two vertex sets given as bool-like masks ``a``, ``b`` of shape ``(V,)``.

    ``|a & b| / |a | b|``. Two empty masks agree on "no contact" and give 1.0.
    """
    a = _bool_array(a, "a", 1, "(vertices,)")
    b = _bool_array(b, "b", 1, "(vertices,)")
    if a.shape != b.shape:
        raise InputError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(a & b)) / union


def mean_pairwise_iou(masks) -> float:
    """Mean ``vertex_iou`` over all unordered annotator pairs of ``(A, V)`` masks.

    Returns ``nan`` for fewer than two annotators (no pair to compare).
    """
    m = _masks(masks)
    n = m.shape[0]
    if n < 2:
        return float("nan")
    packed = np.packbits(m, axis=1)  # 8 vertices per byte: the pair counts are popcounts of ANDed bytes
    inter = np.bitwise_count(packed[:, None, :] & packed[None, :, :]).sum(axis=-1, dtype=np.int64)  # (A, A)
    sizes = np.diag(inter)
    union = sizes[:, None] + sizes[None, :] - inter
    i, j = np.triu_indices(n, k=1)
    u, x = union[i, j], inter[i, j]
    iou = np.divide(x, u, out=np.ones(u.shape), where=u > 0)  # both empty -> 1.0
    return float(iou.mean())


def fleiss_kappa(masks) -> float:
    """Fleiss' kappa of ``(A, V)`` masks: subjects = vertices, raters = annotators, 2 categories.

    With ``c_i`` contact votes on vertex i: ``n_i = (A - c_i, c_i)``,
    ``P_i = (sum_j n_ij^2 - A) / (A (A - 1))``, ``Pbar = mean_i P_i``, ``p_j`` = share of all
    ratings in category j, ``Pe = sum_j p_j^2`` and ``kappa = (Pbar - Pe) / (1 - Pe)``.

    Returns ``nan`` for fewer than two annotators. When every rating falls in one category
    (e.g. all masks empty) ``Pe = 1`` and also ``Pbar = 1``, so the formula is 0/0; the raters
    agree on everything, so this returns 1.0 (perfect agreement).
    """
    m = _masks(masks)
    n, v = m.shape
    if n < 2:
        return float("nan")
    counts = m.sum(axis=0, dtype=np.int64)  # (V,) contact votes per vertex
    total = int(counts.sum())
    if total == 0 or total == n * v:
        return 1.0
    sq = int(np.dot(counts, counts)) + int(np.dot(n - counts, n - counts))  # sum_i sum_j n_ij^2
    p_bar = (sq - v * n) / (v * n * (n - 1))
    p1 = total / (n * v)
    p_e = p1 * p1 + (1.0 - p1) * (1.0 - p1)
    return float((p_bar - p_e) / (1.0 - p_e))


def majority_vote(masks, weights=None) -> np.ndarray:
    """Aggregate ``(A, V)`` masks into one ``(V,)`` bool mask by (weighted) majority.

    A vertex is contact where the weight voting contact is strictly greater than half the total
    weight. An exact tie is not contact: a tie is not a majority, and the conservative label is
    "no contact". ``weights`` is ``(A,)``, finite and non-negative with a positive total; ``None``
    weighs annotators equally (then the count is exact integer arithmetic). Weighted sums that differ
    only by float rounding (relative ``1e-12`` of the total) count as a tie.
    """
    m = _masks(masks)
    n = m.shape[0]
    w = _weights(weights, n)
    if weights is None:
        return 2 * m.sum(axis=0, dtype=np.int64) > n
    total = w.sum()
    votes_for = w @ m.astype(np.float64)  # (V,)
    return 2.0 * votes_for - total > _TIE_RTOL * total  # for - against, against = total - for


def weighted_mean(values, weights=None) -> np.ndarray:
    """Weighted mean over annotators of soft labels ``values`` ``(A, N)`` in [0, 1]; float64 ``(N,)``.

    The aggregation for soft object affordance labels. ``weights`` as in ``majority_vote``. The
    result is clipped to [0, 1] against float rounding.
    """
    vals = _unit_values(values, "values", (2,), "2-D (annotators, points)")
    w = _weights(weights, vals.shape[0])
    mean = (w @ vals) / w.sum()
    return np.clip(mean, 0.0, 1.0)


@dataclass(frozen=True)
class Agreement:
    """Agreement of one task's annotators: their count, mean pairwise IoU and Fleiss' kappa."""

    annotators: int
    mean_pairwise_iou: float
    fleiss_kappa: float


def agreement(masks) -> Agreement:
    """``Agreement`` of ``(A, V)`` masks; both metrics are ``nan`` when ``A < 2``."""
    m = _masks(masks)
    return Agreement(annotators=int(m.shape[0]), mean_pairwise_iou=mean_pairwise_iou(m),
                     fleiss_kappa=fleiss_kappa(m))


def binarise(values, threshold: float = 0.5) -> np.ndarray:
    """Soft labels ``(N,)`` or ``(A, N)`` in [0, 1] to bool of the same shape: ``values >= threshold``.

    Used to compare soft object labels with ``vertex_iou`` / ``fleiss_kappa``. ``threshold`` must be
    a finite number in [0, 1].
    """
    vals = _unit_values(values, "values", (1, 2), "1-D (points,) or 2-D (annotators, points)")
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (int, float, np.number)):
        raise InputError(f"threshold must be a number, got {type(threshold).__name__}")
    if not np.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold must be a finite number in [0, 1], got {threshold!r}")
    return vals >= threshold
