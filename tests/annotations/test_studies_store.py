"""The studies store, one contract over in-memory SQLite, file SQLite and PostgreSQL: design, plans drawn from
recorded seeds, resume, idempotent responses, states, forged and foreign trials, ratings, time limits,
signed links, concurrency; and a writer killed mid-stream (SQLite file and PostgreSQL)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from store_helpers import count_rows
from study_fixtures import image_items, open_study

from annotations import models, studies
from annotations.errors import PayloadError
from annotations.studies import StudyConfig, StudyStateError, TrialError
from engine.errors import InputError


def answer_all(store, slug, token, choice="left", **ratings) -> list:
    receipts = []
    while (trial := studies.current_trial(store, slug, token)) is not None:
        receipts.append(studies.respond(store, slug, token, trial.key, choice, **ratings))
    return receipts


# ---- design ------------------------------------------------------------------------------------------------
def test_create_stores_items_and_files_and_starts_paused(store):
    study = studies.create_study(store, slug="hoi-1", title="HOI", method_a="InteractVLM", method_b="PHOSA",
                                 items=image_items(4, catches=2, reference=True),
                                 config=StudyConfig(attention_checks=2))
    assert (study.state, study.num_items, study.num_catch_items) == ("paused", 4, 2)
    assert len(study.config.completion_code) == 8, "a completion code is generated when none is given"
    items = studies.study_items(store, "hoi-1")
    assert [item.name for item in items] == ["item-00", "item-01", "item-02", "item-03", "check-4", "check-5"]
    first = items[0]
    assert set(first.stimuli) == {"a", "b", "reference"} and first.media == "image"
    for stimulus in first.stimuli.values():
        assert stimulus.path.is_file() and stimulus.path.name.startswith(stimulus.sha256)
        assert stimulus.path.stat().st_size == stimulus.num_bytes
    assert [s.slug for s in studies.list_studies(store)] == ["hoi-1"]
    with pytest.raises(StudyStateError, match="paused"):
        studies.join(store, "hoi-1", "p1", "s1")


@pytest.mark.parametrize("change, message", [
    (dict(slug="Bad Slug"), "short name"),
    (dict(method_b="InteractVLM"), "different names"),
    (dict(items=[]), "at least one item"),
    (dict(config=StudyConfig(items_per_participant=9)), "only 4 regular items"),
    (dict(config=StudyConfig(attention_checks=3)), "the study has 2"),
])
def test_create_refuses_bad_designs(store, change, message):
    arguments = dict(slug="s", title="t", method_a="InteractVLM", method_b="PHOSA",
                     items=image_items(4, catches=2), config=StudyConfig())
    with pytest.raises(InputError, match=message):
        studies.create_study(store, **{**arguments, **change})
    assert count_rows(store, models.StudyRow) == 0


def test_duplicate_items_and_mixed_media_are_refused(store):
    from study_fixtures import glb

    from annotations.studies_media import check_stimulus

    items = image_items(3)
    twice = items + [items[0]]
    with pytest.raises(InputError, match="duplicate item names: 'item-00'"):
        studies.create_study(store, slug="s", title="t", method_a="A", method_b="B", items=twice, config=StudyConfig())
    mixed = [studies.ItemSpec("m", items[0].a, check_stimulus("b.glb", glb()))]
    with pytest.raises(InputError, match="A is image but B is glb"):
        studies.create_study(store, slug="s", title="t", method_a="A", method_b="B", items=mixed, config=StudyConfig())


def test_a_taken_slug_is_refused_and_keeps_the_first_study(store):
    open_study(store, "same")
    with pytest.raises(InputError, match="exists already"):
        studies.create_study(store, slug="same", title="t", method_a="A", method_b="B", items=image_items(2),
                             config=StudyConfig())
    assert all(item.stimuli["a"].path.is_file() for item in studies.study_items(store, "same"))


@pytest.mark.parametrize("config, message", [
    (dict(likert="sometimes"), "likert must be one of"), (dict(time_limit_s=0.5), "time limit"),
    (dict(redirect_url="javascript:alert(1)"), "redirect URL"), (dict(completion_code="no spaces"), "completion"),
    (dict(question=" "), "question"), (dict(attention_checks=1.5), "whole number")])
def test_config_checks(config, message):
    with pytest.raises(InputError, match=message):
        StudyConfig(**config)


# ---- participants and plans --------------------------------------------------------------------------------
def test_plan_comes_from_the_recorded_seed_and_a_reload_resumes(store):
    study = open_study(store, items=6, catches=2, items_per_participant=4, attention_checks=2)
    person = studies.join(store, "demo", "P-1", "S-1")
    assert person.seed == studies.participant_seed(study.seed, "P-1") and person.num_trials == 6
    items = studies.study_items(store, "demo")
    regular = [item.id for item in items if not item.is_catch]
    catches = [item.id for item in items if item.is_catch]
    stored = studies.participant_trials(store, "demo", "P-1")
    plan = studies.plan_trials(regular, catches, 4, 2, person.seed)
    assert [(item, swapped) for _, item, swapped in stored] == plan
    assert sum(item in catches for _, item, _ in stored) == 2 and len({item for _, item, _ in stored}) == 6
    first = studies.current_trial(store, "demo", person.token)
    assert (first.position, first.total) == (1, 6)
    again = studies.join(store, "demo", "P-1", "S-1")
    assert again.token == person.token and studies.current_trial(store, "demo", again.token).key == first.key
    studies.respond(store, "demo", person.token, first.key, "left")
    assert studies.join(store, "demo", "P-1", "S-1").num_answered == 1
    assert studies.current_trial(store, "demo", person.token).position == 2, "resumes at the next trial"


def test_a_trial_is_timed_from_its_first_showing_and_a_reload_keeps_it(store):
    open_study(store, items=2)
    person = studies.join(store, "demo", "P-1", "S")

    def shown() -> list:
        with store.session() as session:
            return session.scalars(sa.select(models.StudyTrialRow.shown_at)
                                   .order_by(models.StudyTrialRow.position)).all()

    assert shown() == [None, None], "joining shows nothing yet (consent and instructions come first)"
    first = studies.current_trial(store, "demo", person.token)
    marked = shown()[0]
    assert marked is not None and shown()[1] is None
    assert studies.current_trial(store, "demo", person.token).key == first.key and shown()[0] == marked
    receipt = studies.respond(store, "demo", person.token, first.key, "left")
    with store.session() as session:
        answered_at = session.scalar(sa.select(models.StudyResponseRow.created_at))
    assert receipt.seconds == pytest.approx((answered_at - marked).total_seconds())
    assert shown() == [marked, answered_at], "the next trial is shown when the answer brings it"


def test_join_without_consent_creates_nobody(store):
    open_study(store)
    assert studies.join(store, "demo", "P-1", "S", create=False) is None
    assert count_rows(store, models.StudyParticipantRow) == 0


def test_signed_links(store):
    open_study(store, signed_links=True)
    with pytest.raises(StudyStateError, match="not valid"):
        studies.join(store, "demo", "P-1", "S-1")
    link = studies.recruitment_link(store, "demo", "https://lab.example", "P-1", "S-1")
    signature = link.split("sig=")[1]
    assert link.startswith("https://lab.example/study/demo?pid=P-1&session=S-1&sig=")
    with pytest.raises(StudyStateError, match="not valid"):
        studies.join(store, "demo", "P-2", "S-1", signature)  # another participant's signature
    with pytest.raises(StudyStateError, match="not valid"):
        studies.join(store, "demo", "P-1", "S-2", signature)
    assert studies.join(store, "demo", "P-1", "S-1", signature).external_id == "P-1"
    with pytest.raises(InputError, match="signed links"):
        studies.recruitment_link(store, "demo", "https://lab.example")


# ---- responses ---------------------------------------------------------------------------------------------
def test_responses_are_idempotent_by_trial_key_and_unswapped(store):
    open_study(store, items=6)
    person = studies.join(store, "demo", "P-1", "S")
    trial = studies.current_trial(store, "demo", person.token)
    first = studies.respond(store, "demo", person.token, trial.key, "left", client_seconds=1.5)
    repeat = studies.respond(store, "demo", person.token, trial.key, "right")
    assert not first.duplicate and repeat.duplicate and repeat.response_id == first.response_id
    assert repeat.choice == "left", "the first answer is kept"
    receipts = answer_all(store, "demo", person.token, "right")
    assert receipts[-1].completed and not receipts[0].completed
    assert studies.current_trial(store, "demo", person.token) is None
    records = studies.response_records(store, "demo")
    assert count_rows(store, models.StudyResponseRow) == len(records) == 6
    plan = {item: swapped for _, item, swapped in studies.participant_trials(store, "demo", "P-1")}
    names = {item.id: item.name for item in studies.study_items(store, "demo")}
    for record in records:
        swapped = plan[next(i for i, n in names.items() if n == record.item)]
        assert record.swapped == swapped
        assert record.chose_a == ((record.choice == "left") != swapped)
    assert records[0].client_seconds == 1.5 and records[0].seconds >= 0


def test_forged_foreign_and_out_of_order_trials_are_refused(store):
    open_study(store, items=4)
    one, two = (studies.join(store, "demo", pid, "S") for pid in ("P-1", "P-2"))
    mine = studies.current_trial(store, "demo", one.token)
    theirs = studies.current_trial(store, "demo", two.token)
    with pytest.raises(TrialError, match="does not exist"):
        studies.respond(store, "demo", one.token, "forged-key-000", "left")
    with pytest.raises(TrialError, match="another participant"):
        studies.respond(store, "demo", one.token, theirs.key, "left")
    with pytest.raises(TrialError, match="unknown participant"):
        studies.respond(store, "demo", "not-a-token", mine.key, "left")
    later = [key for key, in _keys(store, one.id)][1]
    with pytest.raises(TrialError, match="on the screen"):
        studies.respond(store, "demo", one.token, later, "left")
    with pytest.raises(PayloadError, match="choice must be one of"):
        studies.respond(store, "demo", one.token, mine.key, "middle")
    assert count_rows(store, models.StudyResponseRow) == 0


def _keys(store, participant_id):
    with store.session() as session:
        return session.execute(sa.select(models.StudyTrialRow.key).where(
            models.StudyTrialRow.participant_id == participant_id).order_by(models.StudyTrialRow.position)).all()


def test_closed_and_paused_studies_accept_nothing(store):
    open_study(store, items=3)
    person = studies.join(store, "demo", "P-1", "S")
    trial = studies.current_trial(store, "demo", person.token)
    studies.set_state(store, "demo", "closed")
    for call in (lambda: studies.respond(store, "demo", person.token, trial.key, "left"),
                 lambda: studies.join(store, "demo", "P-2", "S"),
                 lambda: studies.current_trial(store, "demo", person.token)):
        with pytest.raises(StudyStateError, match="closed"):
            call()
    studies.set_state(store, "demo", "paused")
    with pytest.raises(StudyStateError, match="paused"):
        studies.respond(store, "demo", person.token, trial.key, "left")
    assert count_rows(store, models.StudyResponseRow) == 0
    studies.set_state(store, "demo", "open")
    assert not studies.respond(store, "demo", person.token, trial.key, "left").duplicate
    with pytest.raises(StudyStateError, match="no such study"):
        studies.join(store, "missing", "P-1", "S")


@pytest.mark.parametrize("mode, ratings, ok", [
    ("none", {}, True), ("none", {"likert_left": 3}, False),
    ("both", {"likert_left": 2, "likert_right": 5}, True), ("both", {"likert_left": 2}, False),
    ("chosen", {"likert_left": 4}, True), ("chosen", {"likert_right": 4}, False),
    ("chosen", {"likert_left": 6}, False), ("chosen", {"likert_left": True}, False)])
def test_likert_modes(store, mode, ratings, ok):
    open_study(store, items=2, likert=mode)
    person = studies.join(store, "demo", "P-1", "S")
    trial = studies.current_trial(store, "demo", person.token)
    if ok:
        studies.respond(store, "demo", person.token, trial.key, "left", **ratings)
        record = studies.response_records(store, "demo")[0]
        given = ratings.get("likert_left")
        assert (record.likert_b if record.swapped else record.likert_a) == given
    else:
        with pytest.raises(PayloadError, match="rating"):
            studies.respond(store, "demo", person.token, trial.key, "left", **ratings)


def test_time_limit_turns_a_late_answer_into_a_timeout(store):
    open_study(store, items=2, time_limit_s=5.0)
    person = studies.join(store, "demo", "P-1", "S")
    trial = studies.current_trial(store, "demo", person.token)
    with store.session(write=True) as session:  # the trial was shown 30 s ago
        row = session.scalar(sa.select(models.StudyTrialRow).where(models.StudyTrialRow.key == trial.key))
        row.shown_at -= timedelta(seconds=30)
    receipt = studies.respond(store, "demo", person.token, trial.key, "left")
    assert receipt.choice == "timeout" and receipt.seconds >= 30
    second = studies.current_trial(store, "demo", person.token)
    assert studies.respond(store, "demo", person.token, second.key, "timeout").choice == "timeout"
    assert [r.chose_a for r in studies.response_records(store, "demo")] == [None, None]


def test_timeout_needs_a_time_limit(store):
    open_study(store, items=2)
    person = studies.join(store, "demo", "P-1", "S")
    trial = studies.current_trial(store, "demo", person.token)
    with pytest.raises(PayloadError, match="no time limit"):
        studies.respond(store, "demo", person.token, trial.key, "timeout")


# ---- concurrency -------------------------------------------------------------------------------------------
def test_concurrent_participants_and_double_submits_store_each_answer_once(store):
    open_study(store, items=5)
    errors, people = [], 8

    def answer(token: str, key: str) -> None:
        try:
            studies.respond(store, "demo", token, key, "left")
        except Exception as error:  # collected and asserted below: a thread cannot fail the test itself
            errors.append(error)

    def participant(index: int) -> None:
        try:
            person = studies.join(store, "demo", f"P-{index}", "S")
            while (trial := studies.current_trial(store, "demo", person.token)) is not None:
                racers = [threading.Thread(target=answer, args=(person.token, trial.key)) for _ in range(2)]
                for racer in racers:
                    racer.start()
                for racer in racers:
                    racer.join()
        except Exception as error:  # collected and asserted below: a thread cannot fail the test itself
            errors.append(error)

    threads = [threading.Thread(target=participant, args=(i,)) for i in range(people)]
    joiners = [threading.Thread(target=studies.join, args=(store, "demo", "P-0", "S")) for _ in range(3)]
    for thread in threads + joiners:
        thread.start()
    for thread in threads + joiners:
        thread.join()
    assert errors == []
    assert count_rows(store, models.StudyParticipantRow) == people
    assert count_rows(store, models.StudyResponseRow) == people * 5
    assert studies.participation(store, "demo") == (people, people)


# ---- crash safety (SQLite file, PostgreSQL) ----------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]
WRITER = """
import sys
sys.path.insert(0, {root!r})
from annotations.store import Store
from annotations import studies
store = Store({url!r}, data_dir={data!r})
index = 0
while True:
    person = studies.join(store, "crash", f"P-{{index}}", "S")
    index += 1
    while (trial := studies.current_trial(store, "crash", person.token)) is not None:
        studies.respond(store, "crash", person.token, trial.key, "left")
        print("ACK", trial.key, flush=True)
"""


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"], indirect=True)
def test_sigkill_keeps_every_acknowledged_response(make_store, backend, tmp_path):
    store = make_store()
    url = store.url
    open_study(store, "crash", items=5)
    store.close()
    script = WRITER.format(root=str(ROOT), url=url, data=str(tmp_path / "data"))
    child = subprocess.Popen([sys.executable, "-c", script],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    acknowledged = []
    for line in child.stdout:
        acknowledged.append(line.split()[1])
        if len(acknowledged) == 60:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    acknowledged += [line.split()[1] for line in child.stdout.read().splitlines() if line.startswith("ACK")]
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        if backend == "sqlite-file":
            assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        stored = {key for key, in connection.exec_driver_sql(
            "SELECT t.key FROM study_responses r JOIN study_trials t ON t.id = r.trial_id")}
        plans = connection.exec_driver_sql("SELECT participant_id, count(*) FROM study_trials "
                                           "GROUP BY participant_id").all()
    engine.dispose()
    assert len(acknowledged) >= 60 and set(acknowledged) <= stored
    assert all(count == 5 for _, count in plans), "a participant's plan is written whole or not at all"
    from annotations.store import Store

    reopened = Store(url, data_dir=tmp_path / "data")  # not make_store: that starts PostgreSQL afresh
    assert len(studies.response_records(reopened, "crash")) == len(stored)
    reopened.close()


def test_stimulus_files_from_memory_match_the_database_and_the_swap(store):
    """Every trial handed out is remembered with its files; the remembered answer equals the stored one (read
    again after forgetting) and the plan's swap, and a trial is found under its own study only."""
    open_study(store, items=4, reference=True)
    open_study(store, "other", items=2)
    person = studies.join(store, "demo", "P-1", "S-1")
    items = {item.id: item for item in studies.study_items(store, "demo")}
    plan = studies.participant_trials(store, "demo", "P-1")
    seen = []
    for _, item_id, swapped in plan:
        trial = studies.current_trial(store, "demo", person.token)
        expected = {"left": "b" if swapped else "a", "right": "a" if swapped else "b", "reference": "reference"}
        for slot, role in expected.items():
            remembered = studies.cached_stimulus_file(store, "demo", trial.key, slot)
            assert remembered == items[item_id].stimuli[role], (slot, swapped)
        with pytest.raises(TrialError):
            studies.cached_stimulus_file(store, "other", trial.key, "left")
        with pytest.raises(TrialError):
            studies.cached_stimulus_file(store, "demo", trial.key, "middle")
        seen.append((trial.key, expected, item_id))
        studies.respond(store, "demo", person.token, trial.key, "left")
    assert any(swapped for _, _, swapped in plan) and not all(swapped for _, _, swapped in plan)
    studies._CACHES.pop(store, None)  # a fresh process: the files come from the database, then from memory
    for key, expected, item_id in seen:
        assert studies.cached_stimulus_file(store, "demo", key, "left") is None
        for slot, role in expected.items():
            assert studies.stimulus_file(store, "demo", key, slot) == items[item_id].stimuli[role]
        with pytest.raises(TrialError):
            studies.stimulus_file(store, "other", key, "left")
    unseen = studies.join(store, "other", "P-2", "S-2")
    assert studies.cached_stimulus_file(store, "other", studies.current_trial(store, "other", unseen.token).key,
                                        "right") is not None
