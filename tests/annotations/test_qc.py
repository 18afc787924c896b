"""Tests of annotations.qc against hand-computed cases (worked out in the comments) and a slow reference."""
from __future__ import annotations

import math
from fractions import Fraction
from itertools import combinations

import numpy as np
import pytest

from annotations.qc import (Agreement, agreement, binarise, fleiss_kappa, majority_vote, mean_pairwise_iou,
                            vertex_iou, weighted_mean)
from engine.errors import InputError


def masks(*rows: str) -> np.ndarray:
    """``masks("1100", "1000")`` -> bool array (2, 4)."""
    return np.array([[ch == "1" for ch in row] for row in rows], dtype=bool)


# ---------------------------------------------------------------- Fleiss' kappa


def test_fleiss_kappa_3_raters_4_vertices_symmetric():
    # rows = raters, columns = vertices
    #   r0: 1 1 0 0
    #   r1: 1 0 0 0
    #   r2: 1 1 1 0
    # n_ij (no, contact): v0 (0,3)  v1 (1,2)  v2 (2,1)  v3 (3,0)
    # p_contact = 6/12 = 1/2, p_no = 1/2 -> Pe = 1/4 + 1/4 = 1/2
    # P_i = (sum_j n_ij^2 - 3) / (3*2): v0 (0+9-3)/6 = 1, v1 (1+4-3)/6 = 1/3, v2 1/3, v3 1
    # Pbar = (1 + 1/3 + 1/3 + 1)/4 = 2/3
    # kappa = (2/3 - 1/2) / (1 - 1/2) = (1/6)/(1/2) = 1/3
    assert fleiss_kappa(masks("1100", "1000", "1110")) == pytest.approx(1 / 3, abs=1e-15)


def test_fleiss_kappa_3_raters_4_vertices_skewed():
    #   r0: 1 1 0 0
    #   r1: 1 0 0 0
    #   r2: 1 0 0 0
    # n_ij (no, contact): v0 (0,3)  v1 (2,1)  v2 (3,0)  v3 (3,0)
    # p_contact = 4/12 = 1/3, p_no = 2/3 -> Pe = 1/9 + 4/9 = 5/9
    # P_i: v0 1, v1 (4+1-3)/6 = 1/3, v2 1, v3 1 -> Pbar = (10/3)/4 = 5/6
    # kappa = (5/6 - 5/9) / (4/9) = (5/18) / (4/9) = 5/8
    assert fleiss_kappa(masks("1100", "1000", "1000")) == pytest.approx(5 / 8, abs=1e-15)


def test_fleiss_kappa_wikipedia_style_14_raters_10_subjects():
    # The classic layout (14 raters, 10 subjects) with two categories. Contact votes per subject:
    #   c = 14, 6, 11, 2, 2, 0, 3, 4, 1, 10         (sum 53 of 140 ratings)
    # p_contact = 53/140, p_no = 87/140 -> Pe = (2809 + 7569)/19600 = 10378/19600
    # sum_j n_ij^2 = c^2 + (14-c)^2:
    #   196, 100, 130, 148, 148, 196, 130, 116, 170, 116   (sum 1450)
    # P_i = (s_i - 14)/182 -> Pbar = (1450 - 140)/(10*182) = 1310/1820 = 131/182
    # over the common denominator 254800: Pbar = 183400, Pe = 134914, 1 - Pe = 119886
    # kappa = 48486/119886 = 8081/19981 ~= 0.40443
    counts = [14, 6, 11, 2, 2, 0, 3, 4, 1, 10]
    table = np.zeros((14, 10), dtype=bool)
    for vertex, c in enumerate(counts):
        table[:c, vertex] = True
    p_bar, p_e = Fraction(131, 182), Fraction(10378, 19600)
    assert (p_bar - p_e) / (1 - p_e) == Fraction(8081, 19981)  # the hand arithmetic above
    assert fleiss_kappa(table) == pytest.approx(8081 / 19981, abs=1e-14)
    # a permutation of the raters within a vertex does not change kappa
    rng = np.random.default_rng(0)
    shuffled = np.stack([rng.permutation(col) for col in table.T], axis=1)
    assert fleiss_kappa(shuffled) == pytest.approx(8081 / 19981, abs=1e-14)


def test_fleiss_kappa_perfect_agreement_both_categories_is_one():
    # every vertex (3,0) or (0,3): P_i = 1, Pbar = 1; p = 1/2 -> Pe = 1/2; kappa = (1 - 1/2)/(1/2) = 1
    assert fleiss_kappa(masks("1010", "1010", "1010")) == 1.0


def test_fleiss_kappa_single_category_is_one():
    # all ratings "no contact" (or all "contact"): Pe = 1 and Pbar = 1, the formula is 0/0 -> 1.0 by definition
    assert fleiss_kappa(np.zeros((4, 100), dtype=bool)) == 1.0
    assert fleiss_kappa(np.ones((3, 7), dtype=bool)) == 1.0


def test_fleiss_kappa_systematic_disagreement_is_negative():
    #   r0: 1 0 1 0
    #   r1: 0 1 0 1
    # every vertex (1,1): P_i = (1 + 1 - 2)/(2*1) = 0 -> Pbar = 0; p = 1/2 -> Pe = 1/2
    # kappa = (0 - 1/2)/(1/2) = -1
    assert fleiss_kappa(masks("1010", "0101")) == pytest.approx(-1.0, abs=1e-15)
    #   r0: 1 1 1 0 0 0
    #   r1: 1 0 0 0 1 1
    #   r2: 1 0 0 0 1 1     -> n_ij: (0,3) (2,1) (2,1) (3,0) (1,2) (1,2)
    # p_contact = 9/18 = 1/2 -> Pe = 1/2; P_i = 1, 1/3, 1/3, 1, 1/3, 1/3 -> Pbar = (2 + 4/3)/6 = 5/9
    # kappa = (5/9 - 1/2)/(1/2) = 1/9   (positive, but close to chance)
    assert fleiss_kappa(masks("111000", "100011", "100011")) == pytest.approx(1 / 9, abs=1e-15)


def test_fleiss_kappa_chance_level_is_zero():
    #   r0: 1 1 0 0
    #   r1: 1 0 1 0   -> n_ij: (0,2) (1,1) (1,1) (2,0); P_i = 1, 0, 0, 1 -> Pbar = 1/2; Pe = 1/2 -> kappa = 0
    assert fleiss_kappa(masks("1100", "1010")) == pytest.approx(0.0, abs=1e-15)


def test_fleiss_kappa_fewer_than_two_raters_is_nan():
    assert math.isnan(fleiss_kappa(masks("1010")))
    assert math.isnan(fleiss_kappa(np.zeros((0, 5), dtype=bool)))


def test_fleiss_kappa_accepts_0_1_numbers():
    assert fleiss_kappa(np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]])) == pytest.approx(1 / 3)
    assert fleiss_kappa([[1.0, 0.0], [1.0, 1.0]]) == fleiss_kappa(masks("10", "11"))


def slow_fleiss_kappa(m: np.ndarray) -> float:
    """Textbook Fleiss' kappa, one subject and one category at a time (reference for the fast one)."""
    raters, subjects = m.shape
    categories = (False, True)
    table = [[sum(1 for r in range(raters) if m[r, i] == cat) for cat in categories] for i in range(subjects)]
    p = [sum(table[i][j] for i in range(subjects)) / (raters * subjects) for j in range(len(categories))]
    big_p = []
    for i in range(subjects):
        squares = sum(table[i][j] ** 2 for j in range(len(categories)))
        big_p.append((squares - raters) / (raters * (raters - 1)))
    p_bar = sum(big_p) / subjects
    p_e = sum(pj * pj for pj in p)
    if p_e == 1.0:
        return 1.0
    return (p_bar - p_e) / (1 - p_e)


def test_fleiss_kappa_matches_slow_reference_on_random_masks():
    rng = np.random.default_rng(20240611)
    for _ in range(50):
        a = int(rng.integers(2, 11))
        v = int(rng.integers(1, 300))
        density = rng.uniform(0.0, 1.0)
        m = rng.random((a, v)) < density
        assert fleiss_kappa(m) == pytest.approx(slow_fleiss_kappa(m), abs=1e-12)


def test_fleiss_kappa_correlated_raters_beat_independent_ones():
    rng = np.random.default_rng(1)
    truth = rng.random(5000) < 0.2
    noisy = np.stack([truth ^ (rng.random(5000) < 0.05) for _ in range(5)])
    independent = rng.random((5, 5000)) < 0.2
    assert fleiss_kappa(noisy) > 0.6
    assert abs(fleiss_kappa(independent)) < 0.05


# ---------------------------------------------------------------- IoU


def test_vertex_iou_hand_case():
    # a = {0, 1, 4}, b = {1, 2, 4}: a & b = {1, 4} (2), a | b = {0, 1, 2, 4} (4) -> 1/2
    assert vertex_iou([1, 1, 0, 0, 1], [0, 1, 1, 0, 1]) == 0.5
    # a = {0, 1, 2}, b = {1}: 1/3
    assert vertex_iou(np.array([True, True, True, False]), np.array([False, True, False, False])) == pytest.approx(1 / 3)


def test_vertex_iou_empty_cases():
    assert vertex_iou(np.zeros(6, bool), np.zeros(6, bool)) == 1.0  # agree on "no contact"
    assert vertex_iou(np.zeros(6, bool), np.array([0, 0, 1, 0, 0, 0], bool)) == 0.0
    assert vertex_iou(np.ones(6, bool), np.ones(6, bool)) == 1.0


def test_mean_pairwise_iou_three_annotators():
    #   m0: 1 1 0 0   m1: 1 0 0 0   m2: 1 1 1 0
    # IoU(0,1) = 1/2, IoU(0,2) = 2/3, IoU(1,2) = 1/3 -> mean = (1/2 + 2/3 + 1/3)/3 = 1/2
    assert mean_pairwise_iou(masks("1100", "1000", "1110")) == pytest.approx(0.5, abs=1e-15)
    #   m0: 0 0   m1: 0 0   m2: 1 0
    # IoU(0,1) = 1 (both empty), IoU(0,2) = 0, IoU(1,2) = 0 -> 1/3
    assert mean_pairwise_iou(masks("00", "00", "10")) == pytest.approx(1 / 3, abs=1e-15)


def test_mean_pairwise_iou_matches_pairwise_loop():
    rng = np.random.default_rng(7)
    for _ in range(20):
        m = rng.random((int(rng.integers(2, 8)), 50)) < rng.uniform(0, 0.3)
        expected = np.mean([vertex_iou(m[i], m[j]) for i, j in combinations(range(len(m)), 2)])
        assert mean_pairwise_iou(m) == pytest.approx(expected, abs=1e-12)


def test_mean_pairwise_iou_single_annotator_is_nan():
    assert math.isnan(mean_pairwise_iou(masks("1100")))


# ---------------------------------------------------------------- majority vote


def test_majority_vote_ties_are_not_contact():
    # 2 annotators: v0 both, v1 1-1 tie, v2 1-1 tie, v3 none
    np.testing.assert_array_equal(majority_vote(masks("1100", "1010")), [True, False, False, False])
    # 4 annotators, 2-2 on v0, 3-1 on v1, 1-3 on v2
    np.testing.assert_array_equal(majority_vote(masks("110", "111", "010", "000")), [False, True, False])


def test_majority_vote_three_of_five():
    # v0: 3 of 5 -> True; v1: 2 of 5 -> False; v2: 5 of 5 -> True
    m = masks("101", "111", "101", "011", "001")
    np.testing.assert_array_equal(majority_vote(m), [True, False, True])


def test_majority_vote_weighted_single_annotator_outvotes_two():
    # weights (0.9, 0.2, 0.2), total 1.3, half 0.65
    #   v0: only annotator 0 -> 0.9 > 0.65 -> True
    #   v1: annotators 1 and 2 -> 0.4 -> False
    #   v2: annotators 0 and 1 -> 1.1 -> True
    m = masks("101", "011", "010")
    np.testing.assert_array_equal(majority_vote(m, weights=[0.9, 0.2, 0.2]), [True, False, True])
    np.testing.assert_array_equal(majority_vote(m), [False, True, True])  # unweighted differs on v0, v1


def test_majority_vote_weighted_exact_tie_is_not_contact():
    # weights (0.5, 0.25, 0.25): annotator 0 against 1 and 2 is 0.5 vs 0.5, exactly half -> False either way
    m = masks("10", "01", "01")
    np.testing.assert_array_equal(majority_vote(m, weights=[0.5, 0.25, 0.25]), [False, False])
    # 0.9 vs 0.2 + 0.7: a tie on paper, 1 ulp apart in floats -> still a tie -> False
    assert 0.2 + 0.7 != 0.9
    np.testing.assert_array_equal(majority_vote(m, weights=[0.9, 0.2, 0.7]), [False, False])


def test_majority_vote_zero_weight_annotator_is_ignored():
    m = masks("10", "01")
    np.testing.assert_array_equal(majority_vote(m, weights=np.array([1.0, 0.0])), [True, False])


# ---------------------------------------------------------------- soft labels


def test_weighted_mean_hand_case():
    values = [[0.0, 1.0, 0.5],
              [1.0, 1.0, 0.0]]
    # weights (3, 1): (0*3 + 1*1)/4 = 0.25, (3 + 1)/4 = 1, (1.5 + 0)/4 = 0.375
    out = weighted_mean(values, weights=[3, 1])
    assert out.dtype == np.float64 and out.shape == (3,)
    np.testing.assert_allclose(out, [0.25, 1.0, 0.375], atol=1e-15)
    # equal weights: plain mean
    np.testing.assert_allclose(weighted_mean(values), [0.5, 1.0, 0.25], atol=1e-15)


def test_weighted_mean_stays_in_unit_interval():
    rng = np.random.default_rng(3)
    out = weighted_mean(np.ones((7, 100)), weights=rng.random(7) + 1e-3)
    assert out.max() <= 1.0 and out.min() >= 1.0 - 1e-12


def test_binarise():
    np.testing.assert_array_equal(binarise([0.0, 0.49, 0.5, 1.0]), [False, False, True, True])
    np.testing.assert_array_equal(binarise([[0.2, 0.8]], threshold=0.2), [[True, True]])
    # soft labels compared by kappa after binarising
    soft = np.array([[0.9, 0.6, 0.1, 0.0], [0.8, 0.1, 0.2, 0.3], [0.7, 0.7, 0.9, 0.4]])
    assert fleiss_kappa(binarise(soft)) == pytest.approx(1 / 3)  # same table as the symmetric 3x4 case


# ---------------------------------------------------------------- Agreement


def test_agreement():
    result = agreement(masks("1100", "1000", "1110"))
    assert result == Agreement(annotators=3, mean_pairwise_iou=pytest.approx(0.5), fleiss_kappa=pytest.approx(1 / 3))
    assert isinstance(result.annotators, int)
    with pytest.raises(AttributeError):
        result.annotators = 4  # frozen
    single = agreement(masks("10"))
    assert single.annotators == 1 and math.isnan(single.mean_pairwise_iou) and math.isnan(single.fleiss_kappa)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("func", [mean_pairwise_iou, fleiss_kappa, majority_vote, agreement])
def test_mask_functions_reject_bad_masks(func):
    with pytest.raises(InputError, match="2-D"):
        func(np.array([True, False]))  # 1-D where (A, V) is needed
    with pytest.raises(InputError, match="0/1"):
        func(np.array([[0, 2], [1, 0]]))
    with pytest.raises(InputError, match="0/1"):
        func(np.array([[0.0, np.nan], [1.0, 0.0]]))
    with pytest.raises(InputError, match="at least one vertex"):
        func(np.zeros((2, 0), dtype=bool))
    with pytest.raises(InputError, match="dtype"):
        func(np.array([["a", "b"], ["c", "d"]]))


def test_vertex_iou_rejects_bad_input():
    with pytest.raises(InputError, match="same shape"):
        vertex_iou(np.zeros(3, bool), np.zeros(4, bool))
    with pytest.raises(InputError, match="1-D"):
        vertex_iou(np.zeros((2, 3), bool), np.zeros((2, 3), bool))
    with pytest.raises(InputError, match="0/1"):
        vertex_iou([0.5, 1.0], [1.0, 0.0])


@pytest.mark.parametrize("weights, match", [
    ([np.nan, 1.0, 1.0], "finite"),
    ([np.inf, 1.0, 1.0], "finite"),
    ([-0.5, 1.0, 1.0], "non-negative"),
    ([0.0, 0.0, 0.0], "total weight must be positive"),
    ([1.0, 1.0], r"shape \(3,\)"),
    ([[1.0, 1.0, 1.0]], r"shape \(3,\)"),
    (["a", "b", "c"], "numeric"),
])
def test_weights_are_validated(weights, match):
    with pytest.raises(InputError, match=match):
        majority_vote(masks("10", "01", "11"), weights=weights)
    with pytest.raises(InputError, match=match):
        weighted_mean(np.full((3, 2), 0.5), weights=weights)


def test_weighted_mean_rejects_bad_values():
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        weighted_mean([[0.5, 1.5], [0.0, 0.0]])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        weighted_mean([[0.5, -0.1], [0.0, 0.0]])
    with pytest.raises(InputError, match="finite"):
        weighted_mean([[0.5, np.nan], [0.0, 0.0]])
    with pytest.raises(InputError, match="2-D"):
        weighted_mean([0.5, 0.5])
    with pytest.raises(InputError, match="total weight must be positive"):
        weighted_mean(np.zeros((0, 3)))  # no annotators


def test_binarise_rejects_bad_input():
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        binarise([0.2, 1.2])
    with pytest.raises(InputError, match="finite"):
        binarise([0.2, np.inf])
    with pytest.raises(InputError, match="1-D"):
        binarise(np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match="threshold"):
        binarise([0.2, 0.8], threshold=1.5)
    with pytest.raises(InputError, match="threshold"):
        binarise([0.2, 0.8], threshold=float("nan"))
    with pytest.raises(InputError, match="threshold"):
        binarise([0.2, 0.8], threshold="0.5")
