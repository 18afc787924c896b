"""engine.metrics against hand-computed numbers and brute-force references (REFERENCE.md section 4)."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from engine import metrics
from engine.errors import InputError
from engine.metrics import (
    AffordanceScores,
    CategoryRow,
    ContactScores,
    affordance_metrics,
    affordance_table,
    average_iou,
    contact_metrics,
    contact_precision_recall_f1,
    contact_table,
    format_table,
    geodesic_error_cm,
    mean_absolute_error,
    report_dict,
    roc_auc,
    similarity,
)

# A path graph 0 - 1 - 2 - 3 with edges of 0.125, 0.25 and 0.5 m: positions 0, 0.125, 0.375, 0.875.
# Every distance is exact in float16, so float16 results can be compared exactly.
PATH_POSITIONS = np.array([0.0, 0.125, 0.375, 0.875])
PATH_D = np.abs(PATH_POSITIONS[:, None] - PATH_POSITIONS[None, :])


def one_hot(ids, size):
    row = np.zeros(size)
    row[list(ids)] = 1.0
    return row


# ----------------------------------------------------------------------------------------------
# Human contact: precision, recall, F1


def test_precision_recall_f1_hand_case():
    gt = one_hot(range(6), 10)
    pred = one_hot([0, 1, 2, 6], 10) * 0.9  # 3 of 4 predictions correct, 3 of 6 gt found
    assert contact_precision_recall_f1(pred, gt) == pytest.approx((0.75, 0.5, 0.6), abs=1e-15)


def test_threshold_boundary_counts_exactly_half():
    gt = np.array([1, 1, 0, 0])
    pred = np.array([0.5, np.nextafter(0.5, 0.0), 0.0, 0.0])
    assert contact_precision_recall_f1(pred, gt) == (1.0, 0.5, pytest.approx(2 / 3))


def test_threshold_parameter():
    gt = np.array([1, 1, 0, 0])
    pred = np.array([0.9, 0.3, 0.3, 0.0])
    assert contact_precision_recall_f1(pred, gt, threshold=0.3) == (pytest.approx(2 / 3), 1.0, pytest.approx(0.8))
    assert contact_precision_recall_f1(pred, gt, threshold=0.95) == (1.0, 0.0, 0.0)


def test_no_predicted_vertex():
    assert contact_precision_recall_f1(np.zeros(5), one_hot([1], 5)) == (1.0, 0.0, 0.0)


def test_no_ground_truth_vertex():
    assert contact_precision_recall_f1(one_hot([1], 5), np.zeros(5)) == (0.0, 1.0, 0.0)


def test_both_empty_follows_the_no_prediction_rule_first():
    assert contact_precision_recall_f1(np.zeros(5), np.zeros(5)) == (1.0, 0.0, 0.0)


def test_interactvlm_convention_edge_cases():
    # eval_utils: P = tp / (#pred + 1e-10), R = tp / (#gt + 1e-10), F1 = 2PR / (P + R + 1e-10)
    assert contact_precision_recall_f1([0, 0, 0], [1, 0, 1], convention="interactvlm") == (0.0, 0.0, 0.0)
    assert contact_precision_recall_f1([1, 0, 0], [0, 0, 0], convention="interactvlm") == (0.0, 0.0, 0.0)
    p, r, f1 = contact_precision_recall_f1([1, 1, 0, 0], [1, 0, 1, 1], convention="interactvlm")
    assert p == 1 / (2 + 1e-10) and r == 1 / (3 + 1e-10)
    assert f1 == 2 * p * r / (p + r + 1e-10)
    scores = contact_metrics([[0, 0, 0], [1, 0, 0]], [[1, 0, 1], [1, 0, 0]], convention="interactvlm")
    assert scores.precision == pytest.approx(0.5) and scores.f1 == pytest.approx(0.5)
    assert scores.convention == "interactvlm"
    deco = contact_metrics([[0, 0, 0], [1, 0, 0]], [[1, 0, 1], [1, 0, 0]])
    assert deco.precision == 1.0 and deco.convention == "deco"  # DECO: no prediction gives P = 1


def test_unknown_convention_is_refused():
    with pytest.raises(InputError, match="convention must be one of"):
        contact_metrics([[1.0]], [[1.0]], convention="lemon")
    with pytest.raises(InputError, match="convention must be one of"):
        affordance_metrics([[1.0]], [[1.0]], convention="DECO")


def test_disjoint_sets_give_zero_f1_without_nan():
    assert contact_precision_recall_f1(one_hot([0], 4), one_hot([3], 4)) == (0.0, 0.0, 0.0)


def test_boolean_inputs_are_accepted():
    pred = np.array([True, True, False, False])
    gt = np.array([True, False, True, False])
    assert contact_precision_recall_f1(pred, gt) == (0.5, 0.5, 0.5)


def test_contact_metrics_averages_over_images():
    gt = np.stack([one_hot(range(6), 10), one_hot([3], 10), np.zeros(10)])
    pred = np.stack([one_hot([0, 1, 2, 6], 10), np.zeros(10), one_hot([4], 10)])
    scores = contact_metrics(pred, gt)
    # per image (P, R, F1): (0.75, 0.5, 0.6), (1, 0, 0), (0, 1, 0)
    assert scores.precision == pytest.approx(1.75 / 3)
    assert scores.recall == pytest.approx(1.5 / 3)
    assert scores.f1 == pytest.approx(0.2)
    assert scores.geodesic_cm is None
    assert scores.count == 3


def test_contact_metrics_matches_per_image_loop():
    rng = np.random.default_rng(3)
    pred = rng.random((40, 50)) ** 3
    gt = (rng.random((40, 50)) < 0.1).astype(np.int64)
    gt[0] = 0
    rows = np.array([contact_precision_recall_f1(p, g) for p, g in zip(pred, gt)])
    scores = contact_metrics(pred, gt)
    assert (scores.precision, scores.recall, scores.f1) == pytest.approx(tuple(rows.mean(axis=0)), abs=1e-14)


# ----------------------------------------------------------------------------------------------
# Human contact: geodesic error


def test_geodesic_hand_cases_in_centimetres():
    assert geodesic_error_cm(one_hot([0, 3], 4), one_hot([1], 4), PATH_D) == 43.75  # (0.125 + 0.75) / 2 m
    assert geodesic_error_cm(one_hot([0, 1], 4), one_hot([1, 2], 4), PATH_D) == 6.25  # (0.125 + 0) / 2 m
    assert geodesic_error_cm(one_hot([2], 4), one_hot([0], 4), PATH_D) == 37.5


def test_geodesic_empty_prediction_uses_every_vertex():
    # every vertex to vertex 2: 0.375, 0.25, 0, 0.5 -> mean 0.28125 m
    assert geodesic_error_cm(np.zeros(4), one_hot([2], 4), PATH_D) == 28.125


def test_geodesic_empty_ground_truth_uses_every_vertex():
    # vertex 3's nearest vertex among all is itself
    assert geodesic_error_cm(one_hot([3], 4), np.zeros(4), PATH_D) == 0.0
    # vertex 1 against all vertices: D[1, 1] = 0, and a non-zero diagonal shows the replacement is real
    shifted = PATH_D + 0.25
    assert geodesic_error_cm(one_hot([1], 4), np.zeros(4), shifted) == 25.0


def test_geodesic_float16_matrix_is_reduced_exactly():
    assert geodesic_error_cm(one_hot([0, 3], 4), one_hot([1], 4), PATH_D.astype(np.float16)) == 43.75


def test_geodesic_uses_the_threshold():
    pred = np.array([0.5, 0.2, 0.2, 0.7])
    assert geodesic_error_cm(pred, one_hot([1], 4), PATH_D) == 43.75
    assert geodesic_error_cm(pred, one_hot([1], 4), PATH_D, threshold=0.6) == 75.0


def brute_force_geodesic_cm(pred_mask, gt_mask, distances):
    pred_ids = np.flatnonzero(pred_mask) if pred_mask.any() else np.arange(len(pred_mask))
    gt_ids = np.flatnonzero(gt_mask) if gt_mask.any() else np.arange(len(gt_mask))
    return 100.0 * np.mean([min(distances[i, j] for j in gt_ids) for i in pred_ids])


def test_geodesic_matches_brute_force_in_tiny_chunks(monkeypatch):
    rng = np.random.default_rng(5)
    points = rng.random((30, 3))
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    pred = (rng.random((8, 30)) < 0.3).astype(float)
    gt = (rng.random((8, 30)) < 0.3).astype(float)
    pred[0], gt[1] = 0, 0
    expected = np.mean([brute_force_geodesic_cm(p > 0, g > 0, distances) for p, g in zip(pred, gt)])
    assert contact_metrics(pred, gt, distances).geodesic_cm == pytest.approx(expected, abs=1e-12)
    monkeypatch.setattr(metrics, "GEODESIC_CHUNK_ELEMENTS", 1)  # one row per block
    assert contact_metrics(pred, gt, distances).geodesic_cm == pytest.approx(expected, abs=1e-12)


def test_contact_metrics_averages_geodesic_over_images():
    pred = np.stack([one_hot([0, 3], 4), np.zeros(4)])
    gt = np.stack([one_hot([1], 4), one_hot([2], 4)])
    assert contact_metrics(pred, gt, PATH_D).geodesic_cm == (43.75 + 28.125) / 2


@pytest.mark.parametrize("bad", [np.nan, np.inf, -0.1])
def test_geodesic_rejects_unusable_distances(bad):
    distances = PATH_D.copy()
    distances[0, 1] = bad
    with pytest.raises(InputError, match="image 0"):
        geodesic_error_cm(one_hot([0], 4), one_hot([1], 4), distances)


# ----------------------------------------------------------------------------------------------
# Object affordance: per-sample metrics


def test_similarity_hand_case():
    # p / sum p = [0.5, 0.5, 0, 0], g / sum g = [0.5, 0, 0.5, 0] -> overlap 0.5
    # IAGNet divides by sum + 1e-12: the overlap is g's 0.5 / (1 + 1e-12), not exactly 0.5
    assert similarity([1.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0]) == pytest.approx(0.5 / (1 + 1e-12), abs=1e-17)
    assert similarity([1.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0]) != 0.5
    assert similarity([0.2, 0.4, 0.2], [0.1, 0.2, 0.1]) == pytest.approx(1.0)


@pytest.mark.parametrize("pred, gt", [([0, 0, 0], [0.2, 0.5, 1]), ([0.2, 0.5, 1], [0, 0, 0]), ([0, 0], [0, 0])])
def test_similarity_of_a_zero_map_is_zero(pred, gt):
    assert similarity(pred, gt) == 0.0


def test_mean_absolute_error_hand_case():
    assert mean_absolute_error([0.1, 0.5, 1.0, 0.0], [0.3, 0.5, 0.0, 0.0]) == pytest.approx(0.3, abs=1e-15)


def test_roc_auc_hand_cases_with_ties():
    gt = [1.0, 1.0, 0.0, 0.0]
    assert roc_auc([0.8, 0.5, 0.5, 0.2], gt) == 0.875  # 2 + (0.5 + 1) of 4 pairs
    assert roc_auc([0.5, 0.5, 0.5, 0.2], gt) == 0.75  # (0.5 + 1) * 2 of 4 pairs
    assert roc_auc([0.4, 0.4, 0.4, 0.4], gt) == 0.5  # every pair tied
    assert roc_auc([0.9, 0.8, 0.2, 0.1], gt) == 1.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9], gt) == 0.0


def test_roc_auc_label_boundary_is_inclusive():
    assert roc_auc([0.9, 0.1], [0.5, 0.49]) == 1.0


@pytest.mark.parametrize("gt", [[0.0, 0.2, 0.49], [0.5, 1.0, 0.7]])
def test_roc_auc_is_none_with_a_single_class(gt):
    assert roc_auc([0.3, 0.6, 0.9], gt) is None


def brute_force_auc(scores, positive):
    pos, neg = scores[positive], scores[~positive]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_pairwise_counting_on_random_samples():
    rng = np.random.default_rng(11)
    for _ in range(30):
        size = int(rng.integers(2, 60))
        scores = np.round(rng.random(size), 1)  # rounding makes many ties
        gt = rng.random(size)
        if (gt >= 0.5).all() or (gt < 0.5).all():
            gt[0] = 1.0 - gt[0] if gt[0] != 0.5 else 0.0
        assert roc_auc(scores, gt) == pytest.approx(brute_force_auc(scores, gt >= 0.5), abs=1e-12)


def test_average_iou_hand_counted_thresholds():
    # t_k = k / 19. With p = [0, 0.3, 0.6, 1] and positives {2, 3}:
    #   k = 0:        predicted {0,1,2,3} -> 2/4
    #   k = 1..5:     predicted {1,2,3}   -> 2/3  (5/19 <= 0.3 < 6/19)
    #   k = 6..11:    predicted {2,3}     -> 1    (11/19 <= 0.6 < 12/19)
    #   k = 12..19:   predicted {3}       -> 1/2
    expected = (0.5 + 5 * 2 / 3 + 6 * 1.0 + 8 * 0.5) / 20
    assert expected == pytest.approx(83 / 120)
    assert average_iou([0.0, 0.3, 0.6, 1.0], [0.0, 0.2, 0.5, 0.9]) == pytest.approx(expected, abs=1e-15)


def test_average_iou_perfect_binary_prediction():
    # t = 0 selects both points (IoU 1/2); the 19 other thresholds select exactly the positive.
    assert average_iou([1.0, 0.0], [1.0, 0.0]) == pytest.approx((0.5 + 19) / 20)


@pytest.mark.parametrize("convention", ["deco", "interactvlm"])
def test_average_iou_without_positive_ground_truth_is_undefined(convention):
    # IAGNet sets NaN (left out of the nanmean); scoring it 0 would drag every mean down.
    assert average_iou([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], convention) is None
    assert average_iou([0.9, 0.1, 0.0], [0.2, 0.4, 0.0], convention) is None


def test_all_positive_ground_truth_is_kept_by_deco_and_dropped_by_interactvlm():
    # t = 0 .. 0.421 (9 thresholds) select both points (IoU 1), 0.474 .. 1.0 (11) only the first (1/2).
    assert average_iou([1.0, 0.45], [0.6, 0.9], "deco") == pytest.approx((9 * 1.0 + 11 * 0.5) / 20)
    assert average_iou([1.0, 0.45], [0.6, 0.9], "interactvlm") is None
    deco = affordance_metrics([[1.0, 0.45]], [[0.6, 0.9]], convention="deco")
    ivlm = affordance_metrics([[1.0, 0.45]], [[0.6, 0.9]], convention="interactvlm")
    assert deco.aiou == pytest.approx(72.5) and deco.aiou_count == 1 and deco.convention == "deco"
    assert ivlm.aiou is None and ivlm.aiou_count == 0 and ivlm.convention == "interactvlm"
    assert deco.auc is None and ivlm.auc is None  # a single class has no ROC curve in either


def test_two_sample_case_uses_nanmean_like_iagnet():
    # Sample A: t = 0 .. 0.158 (4 thresholds) select all 4 points, IoU 2/4; 0.211 .. 0.474 (6) select
    # the three 0.5s, IoU 2/3; the other 10 none. aIoU = (4 * 0.5 + 6 * 2/3) / 20 = 0.3.
    # Sample B has no positive: NaN, left out. IAGNet: 30.0; counting B as 0 would give 15.0.
    pred = np.array([[0.5, 0.5, 0.5, 0.2], [0.1, 0.5, 1.0, 0.0]])
    gt = np.array([[1.0, 1.0, 0.0, 0.0], [0.3, 0.4, 0.0, 0.0]])
    for convention in ("deco", "interactvlm"):
        scores = affordance_metrics(pred, gt, convention=convention)
        assert scores.aiou == pytest.approx(30.0) and scores.aiou_count == 1
        assert scores.auc == 75.0 and scores.auc_count == 1


def reference_average_iou(pred, gt):
    ious = []
    for t in np.linspace(0, 1, 20):
        predicted = {i for i, value in enumerate(pred) if value >= t}
        labelled = {i for i, value in enumerate(gt) if value >= 0.5}
        union = predicted | labelled
        ious.append(len(predicted & labelled) / len(union) if union else 0.0)
    return float(np.mean(ious))


def test_average_iou_matches_loop_reference(monkeypatch):
    rng = np.random.default_rng(13)
    pred = rng.random((25, 40))
    pred[:, :5] = np.linspace(0, 1, 20)[rng.integers(0, 20, (25, 5))]  # values exactly on thresholds
    gt = rng.random((25, 40)) ** 2
    expected = np.array([reference_average_iou(p, g) for p, g in zip(pred, gt)])
    for p, g, e in zip(pred, gt, expected):
        assert average_iou(p, g) == pytest.approx(e, abs=1e-15)
    monkeypatch.setattr(metrics, "AIOU_CHUNK_ELEMENTS", 1)  # one sample per block
    assert affordance_metrics(pred, gt).aiou == pytest.approx(100 * expected.mean(), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# Object affordance: batch summary


def test_affordance_metrics_summary_and_auc_exclusion():
    pred = np.array([[0.5, 0.5, 0.5, 0.2], [0.1, 0.5, 1.0, 0.0]])
    gt = np.array([[1.0, 1.0, 0.0, 0.0], [0.3, 0.4, 0.0, 0.0]])  # the second sample has no positive
    scores = affordance_metrics(pred, gt)
    assert scores.count == 2
    assert scores.auc_count == 1
    assert scores.auc == 75.0
    assert scores.mae == pytest.approx((1.7 / 4 + 1.3 / 4) / 2)  # = 0.375
    assert scores.sim == pytest.approx((similarity(pred[0], gt[0]) + similarity(pred[1], gt[1])) / 2)
    assert scores.aiou == pytest.approx(100 * average_iou(pred[0], gt[0])) == pytest.approx(30.0)
    assert scores.aiou_count == 1


def test_affordance_metrics_with_no_defined_auc():
    scores = affordance_metrics(np.full((2, 3), 0.4), np.zeros((2, 3)))
    assert scores.auc is None
    assert scores.auc_count == 0
    assert scores.count == 2


def test_affordance_metrics_matches_per_sample_functions():
    rng = np.random.default_rng(17)
    pred, gt = rng.random((12, 30)), rng.random((12, 30))
    scores = affordance_metrics(pred, gt)
    assert scores.sim == pytest.approx(np.mean([similarity(p, g) for p, g in zip(pred, gt)]), abs=1e-14)
    assert scores.mae == pytest.approx(np.mean([mean_absolute_error(p, g) for p, g in zip(pred, gt)]), abs=1e-14)
    assert scores.auc == pytest.approx(100 * np.mean([roc_auc(p, g) for p, g in zip(pred, gt)]), abs=1e-12)
    assert scores.aiou == pytest.approx(100 * np.mean([average_iou(p, g) for p, g in zip(pred, gt)]), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# Tables and reports


def test_contact_table_rows_and_order():
    rng = np.random.default_rng(19)
    pred = rng.random((7, 4))
    gt = (rng.random((7, 4)) < 0.5).astype(float)
    categories = ["bench", "apple", "bench", "chair", "apple", "bench", "couch"]
    rows = contact_table(pred, gt, categories, geodesic=PATH_D)
    assert [(row.category, row.count) for row in rows] == [
        ("all", 7), ("bench", 3), ("apple", 2), ("chair", 1), ("couch", 1)]
    assert rows[0].scores == contact_metrics(pred, gt, PATH_D)
    bench = [0, 2, 5]
    assert rows[1].scores == contact_metrics(pred[bench], gt[bench], PATH_D)
    assert rows[3].scores == contact_metrics(pred[[3]], gt[[3]], PATH_D)


def test_affordance_table_rows_and_order():
    rng = np.random.default_rng(23)
    pred, gt = rng.random((5, 10)), rng.random((5, 10))
    gt[4] = 0.1  # "mug" has no AUC-able sample
    rows = affordance_table(pred, gt, ("knife", "bag", "knife", "bag", "mug"))
    assert [(row.category, row.count) for row in rows] == [("all", 5), ("bag", 2), ("knife", 2), ("mug", 1)]
    assert rows[0].scores == affordance_metrics(pred, gt)
    assert rows[1].scores == affordance_metrics(pred[[1, 3]], gt[[1, 3]])
    assert rows[0].scores.auc_count == 4
    assert rows[3].scores.auc is None


def test_format_contact_table():
    rows = [CategoryRow("all", ContactScores(0.75, 0.5, 0.6, 43.75, 12)),
            CategoryRow("Skateboard", ContactScores(0.1234, 1.0, 0.0, 2.0, 3))]
    assert format_table(rows).splitlines() == [
        "Category     #  F1 (%)  Prec. (%)  Rec. (%)  Geo. (cm)",
        "all         12    60.0       75.0      50.0      43.75",
        "Skateboard   3     0.0       12.3     100.0       2.00",
    ]


def test_format_contact_table_without_geodesic():
    rows = [CategoryRow("all", ContactScores(0.5, 0.5, 0.5, None, 1))]
    assert format_table(rows).splitlines()[1] == "all       1    50.0       50.0      50.0          -"


def test_format_affordance_table():
    rows = [CategoryRow("all", AffordanceScores(0.5, 0.3, 75.0, 69.1666, 2, 1)),
            CategoryRow("mug", AffordanceScores(0.0, 0.125, None, 0.0, 1, 0))]
    assert format_table(rows).splitlines() == [
        "Category  #    SIM  AUC (%)  aIoU (%)    MAE",
        "all       2  0.500    75.00     69.17  0.300",
        "mug       1  0.000        -      0.00  0.125",
    ]


def test_report_dict_is_json_ready():
    pred = np.stack([one_hot([0, 3], 4), np.zeros(4), one_hot([1], 4)])
    gt = np.stack([one_hot([1], 4), one_hot([2], 4), one_hot([1], 4)])
    rows = contact_table(pred, gt, ["cup", "cup", "bed"], geodesic=PATH_D)
    report = json.loads(json.dumps(report_dict(rows), allow_nan=False))
    assert report["kind"] == "contact"
    assert report["overall"] == asdict(rows[0].scores)
    assert report["overall"]["count"] == 3
    assert [entry["category"] for entry in report["categories"]] == ["cup", "bed"]
    assert report["categories"][0]["geodesic_cm"] == (43.75 + 28.125) / 2
    assert report["categories"][1] == {"category": "bed", "precision": 1.0, "recall": 1.0, "f1": 1.0,
                                       "geodesic_cm": 0.0, "count": 1, "convention": "deco"}
    assert report["convention"] == "deco"


def test_report_dict_for_affordance_keeps_undefined_auc_as_null():
    rows = affordance_table(np.full((2, 3), 0.4), np.zeros((2, 3)), ["mug", "mug"])
    text = json.dumps(report_dict(rows), allow_nan=False)
    assert json.loads(text)["overall"]["auc"] is None
    assert json.loads(text)["kind"] == "affordance"


def test_scores_are_frozen():
    with pytest.raises(AttributeError):
        ContactScores(1.0, 0.0, 0.0, None, 1).f1 = 0.5


# ----------------------------------------------------------------------------------------------
# Bad input


GOOD_PRED = np.array([[0.2, 0.8, 0.6]])
GOOD_GT = np.array([[0.0, 1.0, 1.0]])


@pytest.mark.parametrize("pred, gt, message", [
    (np.zeros((2, 3)), np.zeros((2, 4)), "same shape"),
    (np.array([[np.nan, 0.1, 0.2]]), GOOD_GT, "NaN or inf"),
    (GOOD_PRED, np.array([[0.0, np.inf, 1.0]]), "NaN or inf"),
    (GOOD_PRED, np.array([[0.0, 0.5, 1.0]]), "0 or 1"),
    (GOOD_PRED, np.array([[0.0, 2.0, 1.0]]), "0 or 1"),
    (np.zeros((0, 3)), np.zeros((0, 3)), "empty"),
    (np.zeros((2, 0)), np.zeros((2, 0)), "empty"),
    (np.zeros(3), np.zeros(3), r"shape \(N, V\)"),
    (np.array([["a", "b", "c"]]), GOOD_GT, "real numbers"),
    ([[0.1, 0.2], [0.3]], [[0, 1], [1]], "numeric array"),
])
def test_contact_metrics_rejects_bad_input(pred, gt, message):
    with pytest.raises(InputError, match=message):
        contact_metrics(pred, gt)


def test_contact_per_image_functions_reject_matrices():
    with pytest.raises(InputError, match=r"shape \(V,\)"):
        contact_precision_recall_f1(GOOD_PRED, GOOD_GT)
    with pytest.raises(InputError, match=r"shape \(V,\)"):
        geodesic_error_cm(GOOD_PRED, GOOD_GT, np.zeros((3, 3)))


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), "high", None])
def test_contact_rejects_bad_threshold(threshold):
    with pytest.raises(InputError, match="threshold"):
        contact_metrics(GOOD_PRED, GOOD_GT, threshold=threshold)


@pytest.mark.parametrize("geodesic", [np.zeros((3, 4)), np.zeros((4, 4)), np.zeros(9), np.zeros((3, 3), dtype=complex)])
def test_contact_rejects_wrong_geodesic_matrix(geodesic):
    with pytest.raises(InputError, match="geodesic"):
        contact_metrics(GOOD_PRED, GOOD_GT, geodesic=geodesic)
    with pytest.raises(InputError, match="geodesic"):
        geodesic_error_cm(GOOD_PRED[0], GOOD_GT[0], geodesic)


@pytest.mark.parametrize("pred, gt, message", [
    (np.zeros((2, 3)), np.zeros((3, 3)), "same shape"),
    (np.array([[-0.1, 0.2, 0.3]]), np.zeros((1, 3)), r"pred affordance values must lie in \[0, 1\]"),
    (np.zeros((1, 3)), np.array([[0.0, 1.1, 0.3]]), r"gt affordance values must lie in \[0, 1\]"),
    (np.array([[np.nan, 0.2, 0.3]]), np.zeros((1, 3)), "NaN or inf"),
    (np.zeros((0, 5)), np.zeros((0, 5)), "empty"),
    (np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), r"shape \(N, P\)"),
])
def test_affordance_metrics_rejects_bad_input(pred, gt, message):
    with pytest.raises(InputError, match=message):
        affordance_metrics(pred, gt)


@pytest.mark.parametrize("function", [similarity, mean_absolute_error, roc_auc, average_iou])
def test_affordance_per_sample_functions_reject_bad_input(function):
    with pytest.raises(InputError, match=r"shape \(P,\)"):
        function(np.zeros((1, 3)), np.zeros((1, 3)))
    with pytest.raises(InputError, match="same shape"):
        function(np.zeros(3), np.zeros(4))
    with pytest.raises(InputError, match="empty"):
        function([], [])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        function([0.5, 1.5], [0.0, 1.0])


@pytest.mark.parametrize("categories, message", [
    (["a"], "1 names but pred and gt have 2 rows"),
    (["a", "b", "c"], "3 names"),
    ("ab", "sequence of names"),
    (["a", 3], "non-empty string"),
    (["a", ""], "non-empty string"),
    (["a", "all"], "reserved"),
])
def test_tables_reject_bad_categories(categories, message):
    pred, gt = np.full((2, 3), 0.6), np.ones((2, 3))
    with pytest.raises(InputError, match=message):
        contact_table(pred, gt, categories)
    with pytest.raises(InputError, match=message):
        affordance_table(pred, gt, categories)


def test_format_and_report_reject_bad_rows():
    contact = CategoryRow("all", ContactScores(1.0, 1.0, 1.0, None, 1))
    affordance = CategoryRow("all", AffordanceScores(1.0, 0.0, None, 100.0, 1, 0))
    for function in (format_table, report_dict):
        with pytest.raises(InputError, match="no rows"):
            function([])
        with pytest.raises(InputError, match="mix"):
            function([contact, affordance])
        with pytest.raises(InputError, match="CategoryRow"):
            function([("all", 1, 0.5)])
