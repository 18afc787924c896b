"""Evaluation metrics: human contact (DECO) and object affordance (IAGNet on PIAD).

The definitions are those of REFERENCE.md section 4, which follows DECO (Tripathi et al., ICCV 2023)
for human contact and IAGNet (Yang et al., ICCV 2023) for object affordance.

Two conventions (``CONVENTIONS``), so that paper numbers can be compared like for like. Every
summary carries the convention it was computed with:

- ``"deco"`` (the default): DECO's ``utils/metrics.py`` for human contact, IAGNet's ``evalization.py``
  for object affordance.
- ``"interactvlm"``: InteractVLM's ``utils/eval_utils.py``, with which its paper's numbers were made.
  It differs in two places: P, R and F1 add 1e-10 to their denominators (so no prediction gives
  P = R = F1 = 0, and no ground truth gives P = R = F1 = 0 too), and a sample whose thresholded ground
  truth is a single class (all positive or all negative) is dropped from both AUC and aIoU.

Human contact, per image, from scores ``pred`` and binary labels ``gt`` over the V body vertices:
  - a vertex is predicted in contact when ``pred >= threshold`` (0.5 by default);
  - ``P = tp / #pred``, ``R = tp / #gt``, ``F1 = 2PR / (P + R)``, and F1 = 0 when P + R = 0;
  - DECO: no predicted vertex: P = 1, R = 0, F1 = 0. Otherwise, no ground-truth vertex: P = 0, R = 1,
    F1 = 0. The rules apply in that order, so an image with neither gets P = 1, R = 0, F1 = 0;
  - InteractVLM: ``P = tp / (#pred + 1e-10)``, ``R = tp / (#gt + 1e-10)``,
    ``F1 = 2PR / (P + R + 1e-10)``;
  - geodesic error: D is the (V, V) vertex geodesic distance matrix in metres. An empty predicted
    or ground-truth set is replaced by all vertices. ``fp_geo = mean over predicted i of min over
    gt j of D[i, j]``, reported in centimetres.
  Each figure is averaged over images.

Object affordance, per sample, from ``p`` and ``g`` in [0, 1] over the P object points:
  - ``SIM = sum(min(p / (sum p + 1e-12), g / (sum g + 1e-12)))``, IAGNet's ``utils/eval.py`` (an
    all-zero map therefore scores 0);
  - ``MAE = mean |p - g|`` over the P points. IAGNet and InteractVLM divide the sum by a hard-coded
    2048, which equals the mean for PIAD's 2048-point clouds only;
  - ``AUC = ROC-AUC(g >= 0.5, p)``, with a tie between a positive and a negative counted as one half.
    This is the Mann-Whitney U statistic over average ranks, which is what sklearn's
    ``roc_auc_score`` computes. A sample whose labels are all one class has no AUC (NaN);
  - ``aIoU = mean over t in linspace(0, 1, 20) of IoU(p >= t, g >= 0.5)``. DECO/IAGNet: a sample with
    no positive ground truth gets NaN; InteractVLM: every single-class sample gets NaN.
  SIM and MAE are averaged over samples, AUC and aIoU over the samples where they are defined
  (``nanmean``); with none defined the figure is None.

Units: the per-image and per-sample functions return fractions. In the summaries, P, R, F1, SIM and
MAE stay fractions, the geodesic error is in centimetres, and AUC and aIoU are x100.
``format_table`` prints P, R and F1 as percentages, as the paper's tables do.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from engine.errors import InputError

CONTACT_THRESHOLD = 0.5
AFFORDANCE_LABEL_THRESHOLD = 0.5
AIOU_THRESHOLDS = np.linspace(0.0, 1.0, 20)
ALL_CATEGORY = "all"
# Entries of D gathered at once. For V = 10475 a full (V, V) gather would take 0.9 GB in float64,
# so the predicted rows are taken in blocks instead.
GEODESIC_CHUNK_ELEMENTS = 4_000_000
# Booleans built at once by aIoU's (samples, thresholds, points) comparison.
AIOU_CHUNK_ELEMENTS = 16_000_000
SIM_EPS = 1e-12  # IAGNet utils/eval.py SIM
INTERACTVLM_EPS = 1e-10  # InteractVLM utils/eval_utils.py P/R/F1 denominators
CONVENTIONS = ("deco", "interactvlm")
DEFAULT_CONVENTION = "deco"
CONVENTION_NAMES = {"deco": "DECO / IAGNet", "interactvlm": "InteractVLM eval_utils"}

CONTACT_HEADER = ("Category", "#", "F1 (%)", "Prec. (%)", "Rec. (%)", "Geo. (cm)")
AFFORDANCE_HEADER = ("Category", "#", "SIM", "AUC (%)", "aIoU (%)", "MAE")


@dataclass(frozen=True)
class ContactScores:
    """Human-contact scores averaged over ``count`` images.

    precision, recall, f1: fractions in [0, 1].
    geodesic_cm: mean geodesic error in centimetres, or None when no geodesic matrix was given.
    count: number of images averaged.
    convention: "deco" or "interactvlm" (module docstring).
    """

    precision: float
    recall: float
    f1: float
    geodesic_cm: float | None
    count: int
    convention: str = DEFAULT_CONVENTION


@dataclass(frozen=True)
class AffordanceScores:
    """Object-affordance scores averaged over ``count`` samples.

    sim, mae: fractions in [0, 1], over all ``count`` samples.
    auc: ROC-AUC x100, averaged over the ``auc_count`` samples that have both classes;
        None when no sample has both.
    aiou: average IoU x100, over the ``aiou_count`` samples where it is defined (DECO/IAGNet: some
        positive ground truth; InteractVLM: both classes); None when there is none.
    count: number of samples averaged.
    auc_count, aiou_count: number of samples that entered the AUC and aIoU means.
    convention: "deco" or "interactvlm" (module docstring).
    """

    sim: float
    mae: float
    auc: float | None
    aiou: float | None
    count: int
    auc_count: int
    aiou_count: int = 0
    convention: str = DEFAULT_CONVENTION


@dataclass(frozen=True)
class CategoryRow:
    """One table row: the scores of the images or samples of ``category`` ("all" for every one)."""

    category: str
    scores: ContactScores | AffordanceScores

    @property
    def count(self) -> int:
        return self.scores.count


# ----------------------------------------------------------------------------------------------
# Input validation


def _as_numbers(values, name: str, dims: tuple[str, ...]) -> np.ndarray:
    """A finite, non-empty numeric array with one axis per name in ``dims``; booleans become 0/1."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as error:
        raise InputError(f"{name} must be a numeric array: {error}") from None
    if array.dtype == bool:
        array = array.astype(np.float64)
    if array.dtype.kind not in "iuf":
        raise InputError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim != len(dims):
        expected = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
        raise InputError(f"{name} must have shape {expected}, got {array.shape}")
    if array.size == 0:
        raise InputError(f"{name} is empty (shape {array.shape}); at least one value is needed")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(f"{name} contains {bad} NaN or inf values; every value must be finite")
    return array


def _as_pair(pred, gt, dims: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    pred = _as_numbers(pred, "pred", dims)
    gt = _as_numbers(gt, "gt", dims)
    if pred.shape != gt.shape:
        raise InputError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}")
    return pred, gt


def _as_threshold(threshold) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"threshold must be a number, got {threshold!r}") from None
    if not math.isfinite(value):
        raise InputError(f"threshold must be finite, got {threshold!r}")
    return value


def _as_convention(convention) -> str:
    if convention not in CONVENTIONS:
        raise InputError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    return convention


def _contact_masks(pred, gt, dims: tuple[str, ...], threshold) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (predicted, ground-truth) contact masks of validated inputs."""
    pred, gt = _as_pair(pred, gt, dims)
    if not ((gt == 0) | (gt == 1)).all():
        odd = np.unique(gt[(gt != 0) & (gt != 1)])[:5].tolist()
        raise InputError(f"gt contact labels must be 0 or 1, got other values such as {odd}")
    return pred >= _as_threshold(threshold), gt == 1


def _affordance_inputs(pred, gt, dims: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 (pred, gt) affordance maps with every value in [0, 1]."""
    pred, gt = _as_pair(pred, gt, dims)
    for name, array in (("pred", pred), ("gt", gt)):
        low, high = array.min(), array.max()
        if low < 0 or high > 1:
            raise InputError(f"{name} affordance values must lie in [0, 1], got values in [{low:.6g}, {high:.6g}]")
    return pred.astype(np.float64, copy=False), gt.astype(np.float64, copy=False)


def _as_geodesic(geodesic, num_vertices: int) -> np.ndarray:
    """The (V, V) distance matrix as given (float16 stays float16 until reduced)."""
    try:
        matrix = np.asarray(geodesic)
    except (ValueError, TypeError) as error:
        raise InputError(f"geodesic must be a numeric (V, V) matrix: {error}") from None
    if matrix.dtype.kind not in "iuf":
        raise InputError(f"geodesic must hold real distances in metres, got dtype {matrix.dtype}")
    if matrix.shape != (num_vertices, num_vertices):
        raise InputError(
            f"geodesic must be a ({num_vertices}, {num_vertices}) matrix matching the {num_vertices} "
            f"vertices of pred and gt, got shape {matrix.shape}"
        )
    return matrix


def _as_categories(categories, count: int) -> np.ndarray:
    """One non-empty category name per image or sample, as a string array for masking."""
    if isinstance(categories, str) or not isinstance(categories, Sequence | np.ndarray):
        raise InputError(f"categories must be a sequence of names, one per row, got {type(categories).__name__}")
    if len(categories) != count:
        raise InputError(f"categories has {len(categories)} names but pred and gt have {count} rows")
    for name in categories:
        if not isinstance(name, str) or not name:
            raise InputError(f"every category must be a non-empty string, got {name!r}")
        if name == ALL_CATEGORY:
            raise InputError(f"{ALL_CATEGORY!r} is reserved for the row over every category; rename it")
    return np.asarray(categories, dtype=str)


# ----------------------------------------------------------------------------------------------
# Human contact (DECO)


def _precision_recall_f1_rows(pred_mask: np.ndarray, gt_mask: np.ndarray,
                              convention: str = DEFAULT_CONVENTION) -> tuple[np.ndarray, ...]:
    """Per-row P, R and F1 of (N, V) boolean masks, with the convention's rules for empty sets."""
    true_positives = np.count_nonzero(pred_mask & gt_mask, axis=1)
    n_pred = np.count_nonzero(pred_mask, axis=1)
    n_gt = np.count_nonzero(gt_mask, axis=1)
    if convention == "interactvlm":
        precision = true_positives / (n_pred + INTERACTVLM_EPS)
        recall = true_positives / (n_gt + INTERACTVLM_EPS)
        return precision, recall, 2 * precision * recall / (precision + recall + INTERACTVLM_EPS)
    precision = np.divide(true_positives, n_pred, out=np.zeros(len(n_pred)), where=n_pred > 0)
    recall = np.divide(true_positives, n_gt, out=np.zeros(len(n_gt)), where=n_gt > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(len(total)), where=total > 0)
    # np.select takes the first condition that holds, which is REFERENCE's order of the rules:
    # "no predicted vertex" wins when both sets are empty.
    empty = [n_pred == 0, n_gt == 0]
    precision = np.select(empty, [1.0, 0.0], default=precision)
    recall = np.select(empty, [0.0, 1.0], default=recall)
    f1 = np.select(empty, [0.0, 0.0], default=f1)
    return precision, recall, f1


def _nearest_gt_distances(geodesic: np.ndarray, pred_ids: np.ndarray, gt_ids: np.ndarray) -> np.ndarray:
    """min over gt j of D[i, j] for each predicted vertex i, gathering D in bounded blocks."""
    rows_per_block = max(1, GEODESIC_CHUNK_ELEMENTS // gt_ids.size)
    nearest = np.empty(pred_ids.size, dtype=np.float64)
    for start in range(0, pred_ids.size, rows_per_block):
        rows = pred_ids[start:start + rows_per_block]
        # A minimum is exact in D's own dtype, float16 included; only the mean needs float64.
        nearest[start:start + rows.size] = geodesic[np.ix_(rows, gt_ids)].min(axis=1)
    return nearest


def _geodesic_cm_rows(pred_mask: np.ndarray, gt_mask: np.ndarray, geodesic: np.ndarray) -> np.ndarray:
    """Per-row fp_geo in centimetres, an empty set standing for every vertex."""
    all_ids = np.arange(pred_mask.shape[1])
    errors = np.empty(pred_mask.shape[0])
    for image, (pred_row, gt_row) in enumerate(zip(pred_mask, gt_mask)):
        pred_ids = np.flatnonzero(pred_row) if pred_row.any() else all_ids
        gt_ids = np.flatnonzero(gt_row) if gt_row.any() else all_ids
        nearest = _nearest_gt_distances(geodesic, pred_ids, gt_ids)
        # Only the entries actually used are checked: scanning all of a 10475^2 matrix per call
        # would cost more than the metric itself.
        if not np.isfinite(nearest).all() or (nearest < 0).any():
            raise InputError(
                f"geodesic distances used by image {image} are NaN, inf or negative; the matrix must "
                "hold finite non-negative distances in metres between every predicted and gt vertex"
            )
        errors[image] = nearest.mean() * 100.0  # metres to centimetres
    return errors


@dataclass(frozen=True)
class _ContactPerImage:
    """Per-image figures, each (N,), computed once so that every table row only averages."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    geodesic_cm: np.ndarray | None
    convention: str = DEFAULT_CONVENTION

    @property
    def size(self) -> int:
        return len(self.f1)

    def summarise(self, rows: np.ndarray) -> ContactScores:
        geodesic = None if self.geodesic_cm is None else float(self.geodesic_cm[rows].mean())
        return ContactScores(
            precision=float(self.precision[rows].mean()),
            recall=float(self.recall[rows].mean()),
            f1=float(self.f1[rows].mean()),
            geodesic_cm=geodesic,
            count=int(np.count_nonzero(rows)),
            convention=self.convention,
        )


def _contact_per_image(pred, gt, geodesic, threshold, convention) -> _ContactPerImage:
    convention = _as_convention(convention)
    pred_mask, gt_mask = _contact_masks(pred, gt, ("N", "V"), threshold)
    precision, recall, f1 = _precision_recall_f1_rows(pred_mask, gt_mask, convention)
    geodesic_cm = None
    if geodesic is not None:
        geodesic_cm = _geodesic_cm_rows(pred_mask, gt_mask, _as_geodesic(geodesic, pred_mask.shape[1]))
    return _ContactPerImage(precision, recall, f1, geodesic_cm, convention)


def contact_precision_recall_f1(pred_row, gt_row, threshold: float = CONTACT_THRESHOLD,
                                convention: str = DEFAULT_CONVENTION) -> tuple[float, float, float]:
    """(P, R, F1) of one image: ``pred_row`` scores and binary ``gt_row``, both (V,)."""
    convention = _as_convention(convention)
    pred_mask, gt_mask = _contact_masks(pred_row, gt_row, ("V",), threshold)
    precision, recall, f1 = _precision_recall_f1_rows(pred_mask[None], gt_mask[None], convention)
    return float(precision[0]), float(recall[0]), float(f1[0])


def geodesic_error_cm(pred_row, gt_row, geodesic, threshold: float = CONTACT_THRESHOLD) -> float:
    """fp_geo of one image in centimetres; ``geodesic`` is the (V, V) distance matrix in metres."""
    pred_mask, gt_mask = _contact_masks(pred_row, gt_row, ("V",), threshold)
    matrix = _as_geodesic(geodesic, pred_mask.size)
    return float(_geodesic_cm_rows(pred_mask[None], gt_mask[None], matrix)[0])


def contact_metrics(pred, gt, geodesic=None, threshold: float = CONTACT_THRESHOLD,
                    convention: str = DEFAULT_CONVENTION) -> ContactScores:
    """Scores of (N, V) ``pred`` scores against (N, V) binary ``gt``, averaged over the N images.

    ``geodesic`` is the optional (V, V) distance matrix in metres (any float dtype, float16 included);
    without it ``geodesic_cm`` is None. ``convention``: "deco" or "interactvlm" (module docstring).
    """
    per_image = _contact_per_image(pred, gt, geodesic, threshold, convention)
    return per_image.summarise(np.ones(per_image.size, dtype=bool))


# ----------------------------------------------------------------------------------------------
# Object affordance (IAGNet / PIAD)


def _similarity_rows(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    pred_dist = pred / (pred.sum(axis=1, keepdims=True) + SIM_EPS)
    gt_dist = gt / (gt.sum(axis=1, keepdims=True) + SIM_EPS)
    return np.minimum(pred_dist, gt_dist).sum(axis=1)


def _mean_absolute_error_rows(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return np.abs(pred - gt).mean(axis=1)


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks where tied scores share the mean of the ranks they span."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    return (last_rank - (counts - 1) / 2.0)[inverse.ravel()]


def _roc_auc_row(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC of one sample; NaN when the labels are all one class."""
    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # U counts the (positive, negative) pairs ordered correctly, a tie counting one half.
    u_statistic = _average_ranks(scores)[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (n_pos * n_neg))


def _roc_auc_rows(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    positive = gt >= AFFORDANCE_LABEL_THRESHOLD
    return np.array([_roc_auc_row(scores, labels) for scores, labels in zip(pred, positive)])


def _average_iou_rows(pred: np.ndarray, gt: np.ndarray, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
    """Per-row mean over AIOU_THRESHOLDS of IoU(pred >= t, gt >= 0.5); NaN where the convention leaves
    the sample out (no positive ground truth; InteractVLM: also no negative)."""
    positive = gt >= AFFORDANCE_LABEL_THRESHOLD
    ious = np.empty((pred.shape[0], AIOU_THRESHOLDS.size))
    rows_per_block = max(1, AIOU_CHUNK_ELEMENTS // (pred.shape[1] * AIOU_THRESHOLDS.size))
    for start in range(0, pred.shape[0], rows_per_block):
        block = slice(start, start + rows_per_block)
        predicted = pred[block, None, :] >= AIOU_THRESHOLDS[None, :, None]
        labels = positive[block, None, :]
        intersection = np.count_nonzero(predicted & labels, axis=2)
        union = np.count_nonzero(predicted | labels, axis=2)
        ious[block] = np.divide(intersection, union, out=np.zeros(union.shape), where=union > 0)
    result = ious.mean(axis=1)
    n_pos = np.count_nonzero(positive, axis=1)
    undefined = n_pos == 0
    if convention == "interactvlm":
        undefined |= n_pos == positive.shape[1]
    result[undefined] = np.nan
    return result


@dataclass(frozen=True)
class _AffordancePerSample:
    """Per-sample fractions, each (N,); ``auc`` is NaN for a sample left out of the AUC mean."""

    sim: np.ndarray
    mae: np.ndarray
    auc: np.ndarray
    aiou: np.ndarray
    convention: str = DEFAULT_CONVENTION

    @property
    def size(self) -> int:
        return len(self.sim)

    def summarise(self, rows: np.ndarray) -> AffordanceScores:
        auc, auc_count = _nanmean_x100(self.auc[rows])
        aiou, aiou_count = _nanmean_x100(self.aiou[rows])
        return AffordanceScores(
            sim=float(self.sim[rows].mean()),
            mae=float(self.mae[rows].mean()),
            auc=auc,
            aiou=aiou,
            count=int(np.count_nonzero(rows)),
            auc_count=auc_count,
            aiou_count=aiou_count,
            convention=self.convention,
        )


def _nanmean_x100(values: np.ndarray) -> tuple[float | None, int]:
    """(100 x nanmean, number of defined values); None instead of NaN when nothing is defined."""
    defined = values[~np.isnan(values)]
    return (float(100.0 * defined.mean()) if defined.size else None), int(defined.size)


def _affordance_per_sample(pred, gt, convention) -> _AffordancePerSample:
    convention = _as_convention(convention)
    pred, gt = _affordance_inputs(pred, gt, ("N", "P"))
    return _AffordancePerSample(
        sim=_similarity_rows(pred, gt),
        mae=_mean_absolute_error_rows(pred, gt),
        auc=_roc_auc_rows(pred, gt),
        aiou=_average_iou_rows(pred, gt, convention),
        convention=convention,
    )


def similarity(pred_row, gt_row) -> float:
    """SIM of one sample, (P,) maps in [0, 1], with IAGNet's 1e-12 in each sum (0 for an all-zero map)."""
    pred, gt = _affordance_inputs(pred_row, gt_row, ("P",))
    return float(_similarity_rows(pred[None], gt[None])[0])


def mean_absolute_error(pred_row, gt_row) -> float:
    """MAE of one sample, (P,) maps in [0, 1]."""
    pred, gt = _affordance_inputs(pred_row, gt_row, ("P",))
    return float(_mean_absolute_error_rows(pred[None], gt[None])[0])


def roc_auc(pred_row, gt_row) -> float | None:
    """ROC-AUC (a fraction) of ``pred_row`` against ``gt_row >= 0.5``; None when only one class is present."""
    pred, gt = _affordance_inputs(pred_row, gt_row, ("P",))
    auc = _roc_auc_row(pred, gt >= AFFORDANCE_LABEL_THRESHOLD)
    return None if math.isnan(auc) else auc


def average_iou(pred_row, gt_row, convention: str = DEFAULT_CONVENTION) -> float | None:
    """aIoU (a fraction) of one sample over the 20 thresholds of AIOU_THRESHOLDS; None where the
    convention leaves the sample out (module docstring)."""
    convention = _as_convention(convention)
    pred, gt = _affordance_inputs(pred_row, gt_row, ("P",))
    value = float(_average_iou_rows(pred[None], gt[None], convention)[0])
    return None if math.isnan(value) else value


def affordance_metrics(pred, gt, convention: str = DEFAULT_CONVENTION) -> AffordanceScores:
    """Scores of (N, P) ``pred`` against (N, P) ``gt``, both in [0, 1], averaged over samples
    (``nanmean`` for AUC and aIoU). ``convention``: "deco" (IAGNet) or "interactvlm"."""
    per_sample = _affordance_per_sample(pred, gt, convention)
    return per_sample.summarise(np.ones(per_sample.size, dtype=bool))


# ----------------------------------------------------------------------------------------------
# Per-category tables (the layout of the paper's Tables 2, 4 and 6)


def _category_rows(per_row: _ContactPerImage | _AffordancePerSample, categories) -> list[CategoryRow]:
    """The "all" row, then one row per category by count (descending), ties by name."""
    names = _as_categories(categories, per_row.size)
    counts = Counter(names.tolist())
    rows = [CategoryRow(ALL_CATEGORY, per_row.summarise(np.ones(per_row.size, dtype=bool)))]
    for name in sorted(counts, key=lambda category: (-counts[category], category)):
        rows.append(CategoryRow(name, per_row.summarise(names == name)))
    return rows


def contact_table(pred, gt, categories: Sequence[str], geodesic=None, threshold: float = CONTACT_THRESHOLD,
                  convention: str = DEFAULT_CONVENTION) -> list[CategoryRow]:
    """Rows of ContactScores: "all" first, then each category of ``categories`` (one name per image)."""
    return _category_rows(_contact_per_image(pred, gt, geodesic, threshold, convention), categories)


def affordance_table(pred, gt, categories: Sequence[str], convention: str = DEFAULT_CONVENTION) -> list[CategoryRow]:
    """Rows of AffordanceScores: "all" first, then each category of ``categories`` (one name per sample)."""
    return _category_rows(_affordance_per_sample(pred, gt, convention), categories)


def _checked_rows(rows) -> tuple[list[CategoryRow], type]:
    """The rows as a list, and the one scores type they all share."""
    rows = list(rows)
    if not rows:
        raise InputError("no rows given; pass the rows of contact_table or affordance_table")
    if not all(isinstance(row, CategoryRow) for row in rows):
        raise InputError("rows must be CategoryRow objects, as contact_table and affordance_table return")
    kinds = {type(row.scores) for row in rows}
    if len(kinds) != 1:
        raise InputError("rows mix contact and affordance scores; give one table at a time")
    if len({row.scores.convention for row in rows}) != 1:
        raise InputError("rows mix evaluation conventions; give one convention's table at a time")
    return rows, kinds.pop()


def _fixed(value: float | None, decimals: int, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.{decimals}f}"


def _contact_cells(row: CategoryRow) -> tuple[str, ...]:
    scores = row.scores
    return (row.category, str(scores.count), _fixed(scores.f1, 1, 100.0), _fixed(scores.precision, 1, 100.0),
            _fixed(scores.recall, 1, 100.0), _fixed(scores.geodesic_cm, 2))


def _affordance_cells(row: CategoryRow) -> tuple[str, ...]:
    scores = row.scores
    return (row.category, str(scores.count), _fixed(scores.sim, 3), _fixed(scores.auc, 2),
            _fixed(scores.aiou, 2), _fixed(scores.mae, 3))


def _align(lines: list[tuple[str, ...]]) -> str:
    """Names left-aligned, figures right-aligned, columns two spaces apart."""
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    text = []
    for line in lines:
        cells = [line[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(line[1:], widths[1:])]
        text.append("  ".join(cells))
    return "\n".join(text)


def format_table(rows) -> str:
    """Aligned text of contact or affordance rows, as in the paper.

    Contact: F1, Prec., Rec. in % with one decimal, Geo. in cm with two. Affordance: SIM and MAE as
    fractions with three decimals, AUC and aIoU x100 with two. A missing figure prints as "-".
    """
    rows, kind = _checked_rows(rows)
    if kind is ContactScores:
        return _align([CONTACT_HEADER, *(_contact_cells(row) for row in rows)])
    return _align([AFFORDANCE_HEADER, *(_affordance_cells(row) for row in rows)])


def report_dict(rows) -> dict:
    """A JSON-serialisable report of table rows: kind, the "all" scores (None if absent), the categories."""
    rows, kind = _checked_rows(rows)
    overall = next((row for row in rows if row.category == ALL_CATEGORY), None)
    return {
        "kind": "contact" if kind is ContactScores else "affordance",
        "convention": rows[0].scores.convention,
        "overall": None if overall is None else asdict(overall.scores),
        "categories": [{"category": row.category, **asdict(row.scores)}
                       for row in rows if row.category != ALL_CATEGORY],
    }
