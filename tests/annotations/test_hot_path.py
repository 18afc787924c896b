"""The annotator hot path under contention, and its shape: on PostgreSQL next_task and submit are ONE
autocommitted statement each (``HotStatements.claim_on`` / ``submit_at_once``); SQLite runs the steps.

The contention tests run many threads on one store and then check every rule against the rows: slots
never over-filled or lost, nobody served a task twice, every gold task to every annotator once, ``filled``
equal to the assignments holding a slot, a resent key answered with the first receipt.
"""
from __future__ import annotations

import threading
import uuid
from collections import defaultdict

import pytest
from sqlalchemy import func, select

from annotations import models, workflow
from annotations.batch import import_batch
from annotations.store import Store
from tests.annotations.store_helpers import contact_rows, write_batch

GOLD_TASKS = 3


def key() -> str:
    return uuid.uuid4().hex


def run_threads(count: int, target) -> list[str]:
    """Run ``target(index)`` on ``count`` threads started together; the errors they raised, as text."""
    errors: list[str] = []
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        barrier.wait()
        try:
            target(index)
        except Exception as error:  # noqa: BLE001 - reported by the caller's assertion
            errors.append(repr(error))

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def work_until_dry(store: Store, person: int, served: list[bool]) -> None:
    while (assignment := workflow.next_task(store, person)) is not None:
        served.append(assignment.task.is_gold)
        workflow.submit(store, person, assignment.task.id, {"chair": [person]}, key())


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_contended_claims_and_submissions_keep_every_rule(make_store, tmp_path):
    """Many writers on few tasks. ``SKIP LOCKED`` may let a writer pass over a task another one is claiming
    (so the gold share is checked single-threaded in test_store_contract), but never over-fill or repeat."""
    threads, turns = 12, 12
    store: Store = make_store(gold_rate=0.25)
    crowd = contact_rows(threads * turns // 2, redundancy=2)
    gold = [{"image": f"gold{i}.png", "labels": ["chair"], "gold": True, "gold_answer": {"chair": [1]}}
            for i in range(GOLD_TASKS)]
    import_batch(store, write_batch(tmp_path / "b", crowd + gold))
    people = [store.ensure_annotator(f"w{i}").id for i in range(threads)]
    served = defaultdict(list)

    assert run_threads(threads, lambda index: work_until_dry(store, people[index], served[people[index]])) == []
    for person in people:  # a writer told "nothing left" while another held the last rows: finish the pool
        work_until_dry(store, person, served[person])
    tasks = models.TaskRow.__table__
    assignments, submissions = models.AssignmentRow.__table__, models.SubmissionRow.__table__
    with store.engine.connect() as connection:
        per_task = dict(connection.execute(select(submissions.c.task_id, func.count())
                                            .group_by(submissions.c.task_id)).all())
        rows = connection.execute(select(tasks.c.id, tasks.c.is_gold, tasks.c.filled)).all()
        pairs = connection.execute(select(assignments.c.task_id, assignments.c.annotator_id)).all()
        statuses = set(connection.scalars(select(assignments.c.status)))
    # Every crowd slot filled exactly once: none over, and none lost (a slot taken without an assignment).
    assert {per_task.get(row.id, 0) for row in rows if not row.is_gold} == {2}
    assert all(row.filled == per_task.get(row.id, 0) for row in rows)
    assert len(pairs) == len(set(pairs)), "an annotator was given the same task twice"
    assert statuses == {"submitted"}
    # Gold has no slot limit: every annotator ends up with every gold task, once.
    assert all(per_task[row.id] == threads for row in rows if row.is_gold)
    assert sum(map(len, served.values())) == len(pairs)
    assert all(flags.count(True) == GOLD_TASKS for flags in served.values())


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_one_key_sent_from_many_threads_is_stored_once(make_store, tmp_path):
    store: Store = make_store(gold_rate=0.0)
    import_batch(store, write_batch(tmp_path / "b", contact_rows(2, redundancy=1)))
    person = store.ensure_annotator("w").id
    task_id = workflow.next_task(store, person).task.id
    shared_key, receipts = key(), []

    def send(_index: int) -> None:
        receipts.append(workflow.submit(store, person, task_id, {"chair": [1, 2]}, shared_key))

    assert run_threads(8, send) == []
    assert len({receipt.submission_id for receipt in receipts}) == 1
    assert sorted(receipt.duplicate for receipt in receipts) == [False] + [True] * 7
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(models.SubmissionRow)) == 1
        assert session.scalar(select(models.TaskRow.filled).where(models.TaskRow.id == task_id)) == 1


class CountingStatements:
    """Wraps ``Store.raw_transaction``: records (single, number of statements) per transaction."""

    def __init__(self, store: Store, monkeypatch):
        self.calls: list[list] = []
        original = store.raw_transaction
        counter = self

        class Counted:
            def __init__(self, db):
                self.db, self.record = db, [None, 0]

            def __getattr__(self, name):
                method = getattr(self.db, name)

                def run(*args, **kwargs):
                    self.record[1] += 1
                    return method(*args, **kwargs)
                return run

        def raw_transaction(write=False, single=False):
            context = original(write=write, single=single)

            class Wrapper:
                def __enter__(self):
                    counted = Counted(context.__enter__())
                    counted.record[0] = single
                    counter.calls.append(counted.record)
                    return counted

                def __exit__(self, *exc):
                    return context.__exit__(*exc)
            return Wrapper()

        monkeypatch.setattr(store, "raw_transaction", raw_transaction)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_next_task_and_submit_are_one_statement_each(make_store, tmp_path, monkeypatch):
    store: Store = make_store(gold_rate=0.0)
    import_batch(store, write_batch(tmp_path / "b", contact_rows(2, redundancy=1)))
    person = store.ensure_annotator("w").id
    workflow.next_task(store, person)  # the first call also runs the stale-assignment sweep
    counted = CountingStatements(store, monkeypatch)
    assignment = workflow.next_task(store, person)  # hands back the open assignment
    workflow.submit(store, person, assignment.task.id, {"chair": [3]}, "k" * 16)
    second = workflow.next_task(store, person)
    assert counted.calls == [[True, 1], [True, 1], [True, 1]]
    # A resent key: the one statement stores nothing, the step-by-step transaction answers.
    counted.calls.clear()
    assert workflow.submit(store, person, assignment.task.id, {"chair": [3]}, "k" * 16).duplicate
    assert counted.calls[0] == [True, 1] and counted.calls[1][0] is False
    assert second.task.id != assignment.task.id


def test_vertex_ids_are_sorted_unique_like_numpy():
    """check_ids and codec.encode_ids skip np.unique on the hot path; both must still equal it."""
    import numpy as np

    from annotations import codec

    rng = np.random.default_rng(3)
    for size in (0, 1, 2, 3, 50, 300, 6890):
        ids = rng.integers(0, 6890, size)
        reference = np.unique(ids)
        assert np.array_equal(workflow.check_ids(ids.tolist(), 6890, "smplh-6890", "chair"), reference)
        for given in (ids, reference, reference[::-1]):
            assert codec.encode_ids(given) == reference.astype("<u4").tobytes()
    assert workflow.check_ids([5, 5, 5], 6890, "smplh-6890", "chair").tolist() == [5]
