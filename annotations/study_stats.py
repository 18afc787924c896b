"""Analysis of a perceptual A/B study: pure functions from response records to a frozen result.

Every test and interval comes from scipy / statsmodels: ``scipy.stats.binomtest`` (two-sided exact binomial
test against 50%), ``statsmodels ... proportion_confint(method="wilson")`` (Wilson 95% intervals),
``scipy.stats.bootstrap`` (participant bootstrap of the preference, Likert means), and
``statsmodels.stats.power.NormalIndPower`` with Cohen's h (the power calculator).

Attention checks (catch trials) never count towards the preference. A participant who fails more than
``max_failed_checks`` of them (a timeout on a check is a failure) is excluded; ``analyse`` gives the figures
both with every participant and with the excluded ones removed.

    result = analyse(records, max_failed_checks=1, fast_answer_s=1.0)
    result.kept.preference.share, result.kept.preference.ci_low, result.kept.preference.p_value
"""
from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize

from annotations.domain import ResponseRecord
from engine.errors import InputError

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
NAN = float("nan")


@dataclass(frozen=True)
class Proportion:
    """``successes`` of ``trials``: the share, its Wilson 95% CI and the two-sided exact binomial p against 50%."""

    successes: int
    trials: int
    share: float
    ci_low: float
    ci_high: float
    p_value: float


def proportion(successes: int, trials: int) -> Proportion:
    if trials == 0:
        return Proportion(0, 0, NAN, NAN, NAN, NAN)
    low, high = proportion_confint(successes, trials, alpha=1 - CONFIDENCE, method="wilson")
    p_value = stats.binomtest(successes, trials, p=0.5, alternative="two-sided").pvalue
    return Proportion(int(successes), int(trials), successes / trials, float(low), float(high), float(p_value))


@dataclass(frozen=True)
class Interval:
    """A statistic with a bootstrap 95% percentile CI (NaN when there is too little data to resample)."""

    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class ItemPreference:
    item: str
    preference: Proportion  # picks of A among this item's answers


@dataclass(frozen=True)
class ParticipantSummary:
    """One participant. agreement: share of their picks that match the other participants' majority per item
    (items without a majority among the others are skipped; NaN when none is left)."""

    participant: str
    answers: int  # regular trials answered (timeouts included)
    picks_a: int
    picks_left: int
    timeouts: int
    agreement: float
    median_seconds: float
    fast_answers: int
    checks: int
    checks_failed: int
    excluded: bool
    reason: str


@dataclass(frozen=True)
class LikertSummary:
    """Ratings of one method's side: the mean with a bootstrap CI and the count of each rating 1..5."""

    method: str  # "A" | "B"
    count: int
    mean: Interval
    counts: tuple[int, ...]  # (5,) ratings 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Timing:
    median_seconds: float
    p10_seconds: float
    p90_seconds: float
    fast_threshold_s: float
    fast_answers: int  # regular answers quicker than the threshold


@dataclass(frozen=True)
class Analysis:
    """Every figure over one set of participants.

    preference: picks of A among the regular, non-timed-out answers (swaps undone).
    preference_bootstrap: the same share with a CI from resampling participants (many answers from few people
        are not over-counted).
    position_bias: picks of the left (top) side among the same answers; 50% means no bias.
    """

    participants: int
    responses: int  # regular answers, timeouts included
    timeouts: int
    preference: Proportion
    preference_bootstrap: Interval
    items: tuple[ItemPreference, ...]
    position_bias: Proportion
    likert: tuple[LikertSummary, ...]
    timing: Timing


@dataclass(frozen=True)
class StudyAnalysis:
    """``all``: every participant; ``kept``: without the excluded ones. ``people`` lists everyone, flags included."""

    all: Analysis
    kept: Analysis
    people: tuple[ParticipantSummary, ...]
    max_failed_checks: int

    @property
    def excluded(self) -> tuple[ParticipantSummary, ...]:
        return tuple(person for person in self.people if person.excluded)

    def to_json(self) -> dict:
        """Every figure as plain JSON (NaN becomes null)."""
        data = asdict(self)
        data["excluded"] = [person.participant for person in self.excluded]
        return _json_safe(data)


def _json_safe(value):
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def analyse(records: Sequence[ResponseRecord], *, max_failed_checks: int = 0, fast_answer_s: float = 1.0,
            seed: int = 0) -> StudyAnalysis:
    """The study's figures with and without the participants the attention checks exclude."""
    people = participant_summaries(records, max_failed_checks, fast_answer_s)
    excluded = {person.participant for person in people if person.excluded}
    kept = [record for record in records if record.participant not in excluded]
    return StudyAnalysis(all=analyse_group(records, fast_answer_s, seed),
                         kept=analyse_group(kept, fast_answer_s, seed), people=tuple(people),
                         max_failed_checks=max_failed_checks)


def analyse_group(records: Sequence[ResponseRecord], fast_answer_s: float, seed: int = 0) -> Analysis:
    regular = [record for record in records if not record.is_catch]
    answered = [record for record in regular if record.chose_a is not None]
    picks_a = sum(record.chose_a for record in answered)
    return Analysis(participants=len({record.participant for record in records}), responses=len(regular),
                    timeouts=len(regular) - len(answered), preference=proportion(picks_a, len(answered)),
                    preference_bootstrap=participant_bootstrap(answered, seed),
                    items=item_preferences(answered),
                    position_bias=proportion(sum(record.choice == "left" for record in answered), len(answered)),
                    likert=likert_summaries(answered, seed), timing=timing(regular, fast_answer_s))


def participant_bootstrap(answered: Sequence[ResponseRecord], seed: int = 0) -> Interval:
    """The pooled share of A with a percentile CI from resampling participants (with all their answers)."""
    per_person: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for record in answered:
        per_person[record.participant][0] += int(record.chose_a)
        per_person[record.participant][1] += 1
    if not per_person:
        return Interval(NAN, NAN, NAN)
    picks, counts = (np.array(column, dtype=np.float64) for column in zip(*per_person.values()))
    share = float(picks.sum() / counts.sum())
    if len(per_person) < 2:
        return Interval(share, NAN, NAN)
    result = stats.bootstrap((picks, counts), lambda a, n, axis: a.sum(axis) / n.sum(axis), paired=True,
                             vectorized=True, confidence_level=CONFIDENCE, n_resamples=BOOTSTRAP_RESAMPLES,
                             method="percentile", rng=np.random.default_rng(seed))
    return Interval(share, float(result.confidence_interval.low), float(result.confidence_interval.high))


def item_preferences(answered: Sequence[ResponseRecord]) -> tuple[ItemPreference, ...]:
    picks: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for record in answered:
        picks[record.item][0] += int(record.chose_a)
        picks[record.item][1] += 1
    return tuple(ItemPreference(item, proportion(a, n)) for item, (a, n) in sorted(picks.items()))


def likert_summaries(answered: Sequence[ResponseRecord], seed: int = 0) -> tuple[LikertSummary, ...]:
    """Per method, every rating its side got (both sides' ratings, or the chosen side's only)."""
    out = []
    for method, field in (("A", "likert_a"), ("B", "likert_b")):
        values = np.array([getattr(record, field) for record in answered if getattr(record, field) is not None],
                          dtype=np.float64)
        counts = tuple(int(np.sum(values == rating)) for rating in range(1, 6))
        out.append(LikertSummary(method, len(values), mean_interval(values, seed), counts))
    return tuple(out)


def mean_interval(values: np.ndarray, seed: int = 0) -> Interval:
    if len(values) == 0:
        return Interval(NAN, NAN, NAN)
    mean = float(values.mean())
    if len(values) < 2 or np.all(values == values[0]):
        return Interval(mean, mean if len(values) >= 2 else NAN, mean if len(values) >= 2 else NAN)
    result = stats.bootstrap((values,), np.mean, confidence_level=CONFIDENCE, n_resamples=BOOTSTRAP_RESAMPLES,
                             method="percentile", rng=np.random.default_rng(seed))
    return Interval(mean, float(result.confidence_interval.low), float(result.confidence_interval.high))


def timing(regular: Sequence[ResponseRecord], fast_answer_s: float) -> Timing:
    seconds = np.array([record.seconds for record in regular if record.choice != "timeout"], dtype=np.float64)
    if len(seconds) == 0:
        return Timing(NAN, NAN, NAN, fast_answer_s, 0)
    p10, median, p90 = np.percentile(seconds, [10, 50, 90])
    return Timing(float(median), float(p10), float(p90), fast_answer_s, int(np.sum(seconds < fast_answer_s)))


def participant_summaries(records: Sequence[ResponseRecord], max_failed_checks: int,
                          fast_answer_s: float) -> list[ParticipantSummary]:
    by_person: dict[str, list[ResponseRecord]] = defaultdict(list)
    for record in records:
        by_person[record.participant].append(record)
    majority = _item_votes(records)
    return [_summary(person, rows, majority, max_failed_checks, fast_answer_s) for person, rows in by_person.items()]


def _item_votes(records: Sequence[ResponseRecord]) -> dict[str, list[int]]:
    votes: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # item -> [picks of A, answers]
    for record in records:
        if not record.is_catch and record.chose_a is not None:
            votes[record.item][0] += int(record.chose_a)
            votes[record.item][1] += 1
    return votes


def _summary(person: str, rows: list[ResponseRecord], votes, max_failed: int, fast_s: float) -> ParticipantSummary:
    regular = [row for row in rows if not row.is_catch]
    answered = [row for row in regular if row.chose_a is not None]
    checks = [row for row in rows if row.is_catch]
    failed = sum(row.chose_a is not True for row in checks)
    agree = []
    for row in answered:  # leave this participant out of the item's majority
        a, n = votes[row.item][0] - int(row.chose_a), votes[row.item][1] - 1
        if n > 0 and 2 * a != n:
            agree.append(row.chose_a == (2 * a > n))
    seconds = [row.seconds for row in regular if row.choice != "timeout"]
    excluded = failed > max_failed
    reason = (f"failed {failed} of {len(checks)} attention checks (more than {max_failed} allowed)" if excluded else "")
    return ParticipantSummary(participant=person, answers=len(regular), picks_a=sum(row.chose_a for row in answered),
                              picks_left=sum(row.choice == "left" for row in answered),
                              timeouts=len(regular) - len(answered),
                              agreement=float(np.mean(agree)) if agree else NAN,
                              median_seconds=float(np.median(seconds)) if seconds else NAN,
                              fast_answers=sum(value < fast_s for value in seconds), checks=len(checks),
                              checks_failed=failed, excluded=excluded, reason=reason)


# ---- power ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerPlan:
    """Answers needed to tell ``preference`` from 50% (two-sided, normal approximation with Cohen's h).

    judgments: total regular answers needed without clustering. With ``items_per_participant`` answers per
    person and an intra-participant correlation ``icc``, the design effect 1 + (m - 1) * icc inflates it;
    participants = ceil(judgments * design_effect / m). exact_power: the exact binomial test's power at
    ``judgments`` answers (a check of the approximation).
    """

    preference: float
    alpha: float
    power: float
    effect_size_h: float
    judgments: int
    items_per_participant: int
    icc: float
    design_effect: float
    participants: int
    exact_power: float


def power_plan(preference: float = 0.62, alpha: float = 0.05, power: float = 0.8, items_per_participant: int = 20,
               icc: float = 0.0) -> PowerPlan:
    _check_power_inputs(preference, alpha, power, items_per_participant, icc)
    h = float(proportion_effectsize(preference, 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' root finder warns on its way to a good answer
        needed = NormalIndPower().solve_power(effect_size=abs(h), alpha=alpha, power=power, ratio=0.0,
                                              alternative="two-sided")
    judgments = int(math.ceil(float(np.asarray(needed).item()) - 1e-9))
    design_effect = 1.0 + (items_per_participant - 1) * icc
    participants = int(math.ceil(judgments * design_effect / items_per_participant - 1e-9))
    return PowerPlan(preference, alpha, power, h, judgments, items_per_participant, icc, design_effect, participants,
                     exact_binomial_power(judgments, preference, alpha))


def _check_power_inputs(preference, alpha, power, items_per_participant, icc) -> None:
    if not 0.0 < preference < 1.0 or preference == 0.5:
        raise InputError("the preference to detect must be between 0 and 1 and not 0.5 (e.g. 0.62)")
    if not 0.0 < alpha < 0.5:
        raise InputError("alpha must be between 0 and 0.5 (e.g. 0.05)")
    if not 0.5 <= power < 1.0:
        raise InputError("the power must be between 0.5 and 1 (e.g. 0.8)")
    if isinstance(items_per_participant, bool) or not isinstance(items_per_participant, int) or \
            not 1 <= items_per_participant <= 5000:
        raise InputError("items per participant must be a whole number from 1 to 5000")
    if not 0.0 <= icc <= 1.0:
        raise InputError("the intra-participant correlation must be between 0 and 1")


def exact_binomial_power(n: int, preference: float, alpha: float) -> float:
    """P(the two-sided exact binomial test rejects 50% at ``alpha``) when the true share is ``preference``.

    Against 50% the binomial is symmetric, so binomtest's two-sided p-value of k successes is
    min(1, 2 * P(X <= min(k, n - k))); the test checks this against ``scipy.stats.binomtest``.
    """
    successes = np.arange(n + 1)
    p_values = np.minimum(1.0, 2.0 * stats.binom.cdf(np.minimum(successes, n - successes), n, 0.5))
    return float(stats.binom.pmf(successes[p_values <= alpha], n, preference).sum())
