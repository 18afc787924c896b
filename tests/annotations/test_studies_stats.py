"""Study statistics against scipy / statsmodels on hand cases (the InteractVLM paper's 62% of 55 printed), the
participant bootstrap, Likert, position bias, exclusions, power, swap randomisation, and the exports."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize

from annotations import studies
from annotations.domain import ResponseRecord, Study
from annotations.studies_export import FIELDS, response_rows, rows_csv, rows_jsonl, summary_json
from annotations.study_stats import (analyse, exact_binomial_power, item_preferences, participant_bootstrap,
                                     power_plan, proportion)
from engine.errors import InputError

WHEN = datetime(2026, 1, 1)


def record(person: str, item: str, chose_a: bool | None, swapped: bool = False, *, catch: bool = False,
           seconds: float = 3.0, likert_a=None, likert_b=None, position: int = 1) -> ResponseRecord:
    choice = "timeout" if chose_a is None else ("left" if chose_a != swapped else "right")
    return ResponseRecord(participant=person, participant_id=hash(person) % 1000, item=item, is_catch=catch,
                          position=position, swapped=swapped, choice=choice, chose_a=chose_a, likert_a=likert_a,
                          likert_b=likert_b, seconds=seconds, client_seconds=None, created_at=WHEN)


@pytest.mark.parametrize("successes, trials", [(34, 55), (0, 10), (10, 10), (50, 100), (7, 9), (1, 1)])
def test_proportion_matches_statsmodels_and_scipy(successes, trials):
    result = proportion(successes, trials)
    low, high = proportion_confint(successes, trials, alpha=0.05, method="wilson")
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=1e-12)
    assert result.p_value == pytest.approx(stats.binomtest(successes, trials, 0.5).pvalue, abs=1e-12)
    assert result.share == successes / trials


def test_interactvlm_62_percent_of_55():
    """InteractVLM: 62% of 55 participants preferred it over PHOSA. 34/55 = 61.8%."""
    result = proportion(34, 55)
    print(f"\nInteractVLM 34/55 = {result.share:.3f}: Wilson 95% CI [{result.ci_low:.4f}, {result.ci_high:.4f}], "
          f"two-sided exact binomial p = {result.p_value:.4f}")
    assert (round(result.ci_low, 4), round(result.ci_high, 4)) == (0.4861, 0.7348)
    assert round(result.p_value, 4) == 0.1048  # not significant at 5% with 55 answers
    plan = power_plan(34 / 55, items_per_participant=1)
    print(f"answers needed to detect {34 / 55:.1%} vs 50% at alpha 0.05, power 0.8: {plan.judgments}")
    assert plan.judgments > 55


def test_empty_proportion_is_nan():
    result = proportion(0, 0)
    assert result.trials == 0 and np.isnan(result.share) and np.isnan(result.p_value)


def test_analysis_undoes_swaps_and_measures_position_bias():
    always_a = [record("p1", f"i{k}", True, swapped=k % 2 == 1) for k in range(10)]
    always_left = [record("p2", f"i{k}", k % 2 == 0, swapped=k % 2 == 1) for k in range(10)]
    one = analyse(always_a).all
    assert one.preference.share == 1.0 and one.position_bias.share == 0.5
    two = analyse(always_left).all
    assert two.preference.share == 0.5 and two.position_bias.share == 1.0
    assert two.position_bias.p_value == pytest.approx(stats.binomtest(10, 10).pvalue)


def test_catch_trials_exclude_and_never_count():
    good = [record("good", f"i{k}", True) for k in range(4)] + [record("good", "check", True, catch=True)]
    bad = [record("bad", f"i{k}", False) for k in range(4)] + [record("bad", "check", False, catch=True),
                                                             record("bad", "check2", None, catch=True)]
    result = analyse(good + bad, max_failed_checks=1)
    assert [p.participant for p in result.excluded] == ["bad"]
    assert result.excluded[0].reason == "failed 2 of 2 attention checks (more than 1 allowed)"
    assert result.all.preference.trials == 8 and result.all.preference.successes == 4
    assert result.kept.preference.trials == 4 and result.kept.preference.share == 1.0
    assert analyse(good + bad, max_failed_checks=2).excluded == ()


def test_per_item_and_agreement_by_hand():
    rows = [record("p1", "x", True), record("p2", "x", True), record("p3", "x", False),
            record("p1", "y", False), record("p2", "y", False), record("p3", "y", False)]
    items = {item.item: item.preference for item in item_preferences(rows)}
    assert (items["x"].successes, items["x"].trials, items["y"].successes) == (2, 3, 0)
    people = {p.participant: p for p in analyse(rows).people}
    # p3 on x: the others (p1, p2) chose A, p3 chose B -> disagrees; on y everyone chose B -> agrees.
    # p1 on x: the others split (p2 A, p3 B) -> no majority, skipped; on y -> agrees.
    assert (people["p3"].agreement, people["p1"].agreement, people["p2"].agreement) == (0.5, 1.0, 1.0)


def test_participant_bootstrap_matches_scipy_and_is_wider_than_wilson_for_clusters():
    rng = np.random.default_rng(0)
    rows = []
    for person in range(6):  # each person has a strong own taste: answers cluster by participant
        taste = rng.random() < 0.5
        rows += [record(f"p{person}", f"i{k}", bool(taste if rng.random() < 0.9 else not taste)) for k in range(30)]
    interval = participant_bootstrap(rows, seed=3)
    picks = np.array([sum(r.chose_a for r in rows if r.participant == f"p{i}") for i in range(6)], float)
    counts = np.full(6, 30.0)
    reference = stats.bootstrap((picks, counts), lambda a, n, axis: a.sum(axis) / n.sum(axis), paired=True,
                                vectorized=True, n_resamples=2000, method="percentile", rng=np.random.default_rng(3))
    assert (interval.ci_low, interval.ci_high) == pytest.approx(
        (reference.confidence_interval.low, reference.confidence_interval.high))
    wilson = proportion(int(picks.sum()), 180)
    assert interval.ci_high - interval.ci_low > 1.5 * (wilson.ci_high - wilson.ci_low)
    assert np.isnan(participant_bootstrap(rows[:30]).ci_low), "one participant cannot be resampled"


def test_likert_means_with_bootstrap_ci_per_method():
    rows = [record("p1", f"i{k}", True, likert_a=a, likert_b=b) for k, (a, b) in
            enumerate([(5, 2), (4, 2), (4, 3), (5, 1), (3, 2)])]
    a, b = analyse(rows).all.likert
    assert (a.method, a.count, a.mean.value, a.counts) == ("A", 5, 4.2, (0, 0, 1, 2, 2))
    assert (b.mean.value, b.counts) == (2.0, (1, 3, 1, 0, 0))
    reference = stats.bootstrap((np.array([5, 4, 4, 5, 3.0]),), np.mean, n_resamples=2000, method="percentile",
                                rng=np.random.default_rng(0))
    assert a.mean.ci_low == pytest.approx(reference.confidence_interval.low)
    assert a.mean.ci_low <= 4.2 <= a.mean.ci_high


def test_fast_answers_are_flagged():
    rows = [record("p1", f"i{k}", True, seconds=s) for k, s in enumerate([0.2, 0.5, 3.0, 4.0])]
    result = analyse(rows, fast_answer_s=1.0)
    assert result.all.timing.fast_answers == 2 and result.people[0].fast_answers == 2
    assert result.all.timing.median_seconds == pytest.approx(1.75)


def test_power_plan_matches_statsmodels_and_exact_binomial():
    plan = power_plan(0.62, alpha=0.05, power=0.8, items_per_participant=20)
    expected = NormalIndPower().solve_power(effect_size=proportion_effectsize(0.62, 0.5), alpha=0.05, power=0.8,
                                            ratio=0)
    assert plan.judgments == int(np.ceil(expected)) == 134
    assert plan.participants == 7 and plan.design_effect == 1.0
    clustered = power_plan(0.62, items_per_participant=20, icc=0.1)
    assert clustered.design_effect == pytest.approx(2.9) and clustered.participants == int(np.ceil(134 * 2.9 / 20))
    assert 0.75 < plan.exact_power < 0.85
    print(f"\n62% vs 50%, alpha 0.05, power 0.8: {plan.judgments} answers = {plan.participants} participants "
          "x 20 items; "
          f"exact binomial power {plan.exact_power:.3f}")


@pytest.mark.parametrize("n", [1, 7, 20, 55])
def test_exact_power_matches_a_binomtest_loop(n):
    rejects = [k for k in range(n + 1) if stats.binomtest(k, n, 0.5).pvalue <= 0.05]
    assert exact_binomial_power(n, 0.7, 0.05) == pytest.approx(stats.binom.pmf(rejects, n, 0.7).sum(), abs=1e-12)


@pytest.mark.parametrize("arguments, message", [(dict(preference=0.5), "not 0.5"), (dict(alpha=0.7), "alpha"),
                                                (dict(power=1.2), "power"), (dict(items_per_participant=0), "items"),
                                                (dict(icc=-0.1), "correlation")])
def test_power_plan_refuses_bad_input(arguments, message):
    with pytest.raises(InputError, match=message):
        power_plan(**arguments)


# ---- swap randomisation ------------------------------------------------------------------------------------
def test_swaps_are_balanced_over_many_seeded_participants():
    regular, catches = list(range(100, 120)), [900, 901]
    swapped_by_position = np.zeros((22, 2))
    first_items = np.zeros(20)
    for pid in range(600):
        plan = studies.plan_trials(regular, catches, 20, 2, studies.participant_seed(12345, f"P{pid}"))
        for position, (item, swapped) in enumerate(plan):
            swapped_by_position[position, int(swapped)] += 1
        first = [item for item, _ in plan if item < 900][0]
        first_items[first - 100] += 1
    total = swapped_by_position.sum(0)
    overall = stats.chisquare(total)
    per_position = stats.chi2_contingency(swapped_by_position)
    order = stats.chisquare(first_items)
    print(f"\nswaps over 600 participants: A right {int(total[1])} / left {int(total[0])}, chi-square p = "
          f"{overall.pvalue:.3f}; per position p = {per_position.pvalue:.3f}; "
          f"first item uniform p = {order.pvalue:.3f}")
    assert overall.pvalue > 0.001 and per_position.pvalue > 0.001 and order.pvalue > 0.001


def test_plans_are_reproducible_from_the_seed():
    regular, catches = list(range(10)), [50, 51]
    assert studies.plan_trials(regular, catches, 6, 2, 99) == studies.plan_trials(regular, catches, 6, 2, 99)
    assert studies.plan_trials(regular, catches, 6, 2, 99) != studies.plan_trials(regular, catches, 6, 2, 100)
    assert studies.participant_seed(1, "a") == studies.participant_seed(1, "a") != studies.participant_seed(1, "b")
    plan = studies.plan_trials(regular, catches, 6, 2, 99)
    assert len(plan) == 8 and len({item for item, _ in plan}) == 8 and {50, 51} <= {item for item, _ in plan}


# ---- exports -----------------------------------------------------------------------------------------------
def test_exports_one_row_per_response_and_a_summary_with_every_figure():
    study = Study(id=1, slug="s", title="t", state="open", method_a="InteractVLM", method_b="PHOSA",
                  config=studies.StudyConfig(likert="both", max_failed_checks=0), seed=1, num_items=2,
                  num_catch_items=1, created_at=WHEN)
    rows_in = [record("p1", "i1", True, swapped=True, likert_a=5, likert_b=2, seconds=0.4),
               record("p1", "i2", False, likert_a=1, likert_b=4), record("p1", "check", True, catch=True),
               record("p2", "i1", True), record("p2", "check", False, catch=True)]
    result = analyse(rows_in)
    rows = response_rows(study, rows_in, result)
    first = rows[0]
    assert (first["left_method"], first["right_method"], first["choice"], first["chosen_method"]) == \
        ("PHOSA", "InteractVLM", "right", "InteractVLM")
    assert (first["likert_left"], first["likert_right"], first["very_fast"], first["excluded"]) == (2, 5, True, False)
    assert [row["excluded"] for row in rows] == [False, False, False, True, True]
    table = list(csv.DictReader(io.StringIO(rows_csv(rows).decode())))
    assert tuple(table[0]) == FIELDS and len(table) == 5 and table[1]["chosen_method"] == "PHOSA"
    lines = [json.loads(line) for line in rows_jsonl(rows).decode().splitlines()]
    assert lines == json.loads(json.dumps(rows))
    summary = json.loads(summary_json(study, result, (2, 2)))
    kept = summary["analysis"]["kept"]
    assert kept["preference"]["successes"] == 1 and kept["preference"]["trials"] == 2
    assert summary["analysis"]["excluded"] == ["p2"]
    for key in ("preference_bootstrap", "items", "position_bias", "likert", "timing"):
        assert key in kept
    assert summary["study"]["method_a"] == "InteractVLM" and summary["participants_joined"] == 2
