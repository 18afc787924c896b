"""Exports of a study: one row per response (CSV and JSONL) and a JSON summary with every figure.

Row fields, in order: participant, item, is_catch, position, left_method, right_method, choice (the side as
shown: left | right | timeout), chosen_method (un-swapped; empty for a timeout), chose_a, likert_left,
likert_right, likert_a, likert_b, seconds (server clock, shown to answered), client_seconds, very_fast,
excluded (by the attention checks), created_at (UTC, ISO 8601).
"""
from __future__ import annotations

import csv
import io
import json
from typing import Sequence

from annotations.domain import ResponseRecord, Study
from annotations.study_stats import StudyAnalysis, power_plan

FIELDS = ("participant", "item", "is_catch", "position", "left_method", "right_method", "choice", "chosen_method",
          "chose_a", "likert_left", "likert_right", "likert_a", "likert_b", "seconds", "client_seconds", "very_fast",
          "excluded", "created_at")


def response_rows(study: Study, records: Sequence[ResponseRecord], analysis: StudyAnalysis) -> list[dict]:
    excluded = {person.participant for person in analysis.excluded}
    fast = study.config.fast_answer_s
    rows = []
    for record in records:
        left, right = (study.method_b, study.method_a) if record.swapped else (study.method_a, study.method_b)
        chosen = "" if record.chose_a is None else (study.method_a if record.chose_a else study.method_b)
        likert_left, likert_right = (record.likert_b, record.likert_a) if record.swapped else \
            (record.likert_a, record.likert_b)
        rows.append({"participant": record.participant, "item": record.item, "is_catch": record.is_catch,
                     "position": record.position, "left_method": left, "right_method": right, "choice": record.choice,
                     "chosen_method": chosen, "chose_a": record.chose_a, "likert_left": likert_left,
                     "likert_right": likert_right, "likert_a": record.likert_a, "likert_b": record.likert_b,
                     "seconds": round(record.seconds, 4), "client_seconds": record.client_seconds,
                     "very_fast": record.choice != "timeout" and record.seconds < fast,
                     "excluded": record.participant in excluded, "created_at": record.created_at.isoformat()})
    return rows


def rows_csv(rows: list[dict]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: ("" if value is None else value) for key, value in row.items()} for row in rows)
    return buffer.getvalue().encode()


def rows_jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, sort_keys=False) + "\n" for row in rows).encode()


def summary_json(study: Study, analysis: StudyAnalysis, participation: tuple[int, int]) -> bytes:
    """The study's design and every figure of the analysis (with and without exclusions), plus a power plan."""
    config = study.config
    items = config.items_per_participant or study.num_items
    observed = analysis.kept.preference.share
    plan = power_plan(observed, items_per_participant=items) if 0 < observed < 1 and observed != 0.5 else None
    summary = {"study": {"slug": study.slug, "title": study.title, "state": study.state, "method_a": study.method_a,
                         "method_b": study.method_b, "seed": study.seed, "items": study.num_items,
                         "catch_items": study.num_catch_items, "config": config.to_json()},
               "participants_joined": participation[0], "participants_finished": participation[1],
               "analysis": analysis.to_json(),
               "power_for_observed_preference": None if plan is None else plan.__dict__}
    return json.dumps(summary, indent=2, allow_nan=False).encode()
