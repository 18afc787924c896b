"""The store's contract, run on in-memory SQLite, file SQLite and PostgreSQL (see conftest)."""
from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest
from sqlalchemy import func, select

from annotations import models, workflow
from annotations.batch import BatchDefaults, import_batch
from annotations.errors import (BatchRejected, NotAssignedError, PayloadError, UnknownAnnotatorError,
                                UnknownTaskError)
from store_helpers import contact_rows, count_rows, write_batch


def key() -> str:
    return uuid.uuid4().hex


def test_import_creates_tasks_and_dedupes_images(store, tmp_path):
    rows = contact_rows(3) + [{"image": "img0.png", "labels": ["Cup "], "priority": 5}]
    report = import_batch(store, write_batch(tmp_path / "batch", rows))
    assert (report.num_tasks, report.num_images, report.new_images) == (4, 3, 3)
    tasks = [store.task(task_id) for task_id in store.task_ids()]
    assert [t.labels for t in tasks] == [("chair", "supporting")] * 3 + [("cup",)]
    assert tasks[0].image.id == tasks[3].image.id and tasks[0].image.path.read_bytes()[:4] == b"\x89PNG"
    assert {t.topology for t in tasks} == {"smplh-6890"} and tasks[3].priority == 5
    with pytest.raises(BatchRejected, match="already imported"):
        import_batch(store, tmp_path / "batch")
    assert count_rows(store, models.TaskRow) == 4


def test_bad_rows_reject_the_whole_batch_and_write_nothing(store, tmp_path):
    rows = contact_rows(2) + [{"image": "img0.png", "labels": []},
                              {"image": "img1.png", "labels": ["chair"], "topology": "smplz-1"},
                              {"image": "missing.png", "labels": ["chair"]},
                              {"image": "img0.png", "labels": ["<script>alert(1)</script>"]},
                              {"image": "img0.png", "labels": ["chair"], "gold_answer": {"chair": [6890]}}]
    folder = write_batch(tmp_path / "batch", rows)
    (folder / "missing.png").unlink()
    (folder / "broken.png").write_bytes(b"not an image at all")
    with (folder / "tasks.jsonl").open("a") as handle:
        handle.write('{"image": "broken.png", "labels": ["chair"]}\n{not json\n')
    with pytest.raises(BatchRejected) as caught:
        import_batch(store, folder)
    problems = "\n".join(caught.value.problems)
    for expected in ("row 3: a task needs at least one object label", "row 4: unknown topology 'smplz-1'",
                     "row 5: missing.png: file not found", "row 6: label", "row 7: label 'chair': vertex ids",
                     "row 8: image 'broken.png' is not a readable image", "row 9: not valid JSON"):
        assert expected in problems
    assert len(caught.value.problems) == 7
    for table in (models.TaskRow, models.ImageRow, models.BatchRow):
        assert count_rows(store, table) == 0
    assert not (store.data_dir / "images").exists() or not any((store.data_dir / "images").rglob("*.png"))


def test_next_task_honours_redundancy_priority_and_never_repeats(make_store, tmp_path):
    store = make_store(gold_rate=0.0)
    rows = contact_rows(3, redundancy=2)
    rows[2]["priority"] = 9
    import_batch(store, write_batch(tmp_path / "b", rows))
    people = [store.ensure_annotator(f"w{i}").id for i in range(3)]
    served = {person: [] for person in people}
    for person in people:
        while (assignment := workflow.next_task(store, person)) is not None:
            served[person].append(assignment.task.id)
            workflow.submit(store, person, assignment.task.id, {"chair": [1, 2]}, key())
    assert served[people[0]] == [3, 1, 2] and served[people[1]] == [3, 1, 2] and served[people[2]] == []
    assert all(len(set(ids)) == len(ids) for ids in served.values())


def test_reload_returns_the_open_assignment_and_skip_frees_the_slot(make_store, tmp_path):
    store = make_store(gold_rate=0.0)
    import_batch(store, write_batch(tmp_path / "b", contact_rows(1, redundancy=1)))
    first, second = store.ensure_annotator("a").id, store.ensure_annotator("b").id
    assignment = workflow.next_task(store, first)
    assert workflow.next_task(store, first).id == assignment.id  # a reload, not a new task
    assert workflow.next_task(store, second) is None  # the only slot is held
    workflow.skip(store, first, assignment.task.id)
    assert workflow.next_task(store, second).task.id == assignment.task.id
    assert workflow.next_task(store, first) is None  # never the same task twice, even after a skip
    with pytest.raises(NotAssignedError, match="already skipped"):
        workflow.submit(store, first, assignment.task.id, {}, key())


def test_flag_frees_the_slot_and_is_counted(make_store, tmp_path):
    from annotations.review import quality_report

    store = make_store(gold_rate=0.0)
    import_batch(store, write_batch(tmp_path / "b", contact_rows(1, redundancy=1)))
    person = store.ensure_annotator("a").id
    task_id = workflow.next_task(store, person).task.id
    with pytest.raises(PayloadError, match="flag reason"):
        workflow.flag(store, person, task_id, "boring")
    workflow.flag(store, person, task_id, "image_unusable")
    assert quality_report(store).tasks[0].flags == 1
    assert workflow.next_task(store, store.ensure_annotator("b").id).task.id == task_id


def test_stale_assignments_expire(make_store, tmp_path):
    store = make_store(gold_rate=0.0, assignment_timeout_s=0.05)
    import_batch(store, write_batch(tmp_path / "b", contact_rows(1, redundancy=1)))
    slow, fast = store.ensure_annotator("slow").id, store.ensure_annotator("fast").id
    task_id = workflow.next_task(store, slow).task.id
    threading.Event().wait(0.2)
    assert workflow.next_task(store, fast).task.id == task_id  # the slow one's slot was freed
    workflow.submit(store, fast, task_id, {"chair": [5]}, key())
    with pytest.raises(NotAssignedError, match="expired and others have filled it"):
        workflow.submit(store, slow, task_id, {"chair": [5]}, key())


def test_gold_tasks_are_mixed_in_at_the_configured_rate(make_store, tmp_path):
    store = make_store(gold_rate=0.25)
    rows = contact_rows(12, redundancy=1) + [
        {"image": f"img{i}.png", "labels": ["chair"], "gold": True, "gold_answer": {"chair": [1, 2, 3]}}
        for i in range(12, 15)]
    import_batch(store, write_batch(tmp_path / "b", rows))
    person = store.ensure_annotator("w").id
    gold_flags = []
    for _ in range(12):
        assignment = workflow.next_task(store, person)
        gold_flags.append(assignment.task.is_gold)
        workflow.submit(store, person, assignment.task.id, {"chair": [1]}, key())
    assert gold_flags == [False, False, False, True] * 3
    assert store.gold_answer(13)["chair"].tolist() == [1, 2, 3]


def test_submit_validates_everything_before_writing(make_store, tmp_path):
    store = make_store(gold_rate=0.0)
    import_batch(store, write_batch(tmp_path / "b", contact_rows(1)))
    person = store.ensure_annotator("w").id
    task_id = workflow.next_task(store, person).task.id
    bad = [({"chair": [0, 6890]}, PayloadError, r"in 0\.\.6889"), ({"chair": [-1]}, PayloadError, "in 0"),
           ({"table": [1]}, PayloadError, "unknown label"), ({"chair": [1.5]}, PayloadError, "integers"),
           ({"chair": list(range(7000))}, PayloadError, "only 6890 vertices"), (["chair"], PayloadError, "map"),
           ({"chair": "1,2"}, PayloadError, "list of integers")]
    for layers, error, message in bad:
        with pytest.raises(error, match=message):
            workflow.submit(store, person, task_id, layers, key())
    with pytest.raises(PayloadError, match="made on 'smplx-10475'"):
        workflow.submit(store, person, task_id, {"chair": [1]}, key(), topology="smplx-10475")
    with pytest.raises(UnknownTaskError):
        workflow.submit(store, person, 999, {"chair": [1]}, key())
    with pytest.raises(UnknownAnnotatorError):
        workflow.submit(store, 999, task_id, {"chair": [1]}, key())
    with pytest.raises(PayloadError, match="submission_key"):
        workflow.submit(store, person, task_id, {"chair": [1]}, "short")
    with pytest.raises(PayloadError, match="client_info"):
        workflow.submit(store, person, task_id, {"chair": [1]}, key(), client_info={"x": "y" * 5000})
    with pytest.raises(PayloadError, match="seconds_spent"):
        workflow.submit(store, person, task_id, {"chair": [1]}, key(), seconds_spent=float("nan"))
    assert count_rows(store, models.SubmissionRow) == 0 and count_rows(store, models.SubmissionLayerRow) == 0


def test_submission_round_trip_and_idempotent_keys(make_store, tmp_path):
    from annotations.review import load_task_annotations

    store = make_store(gold_rate=0.0)
    import_batch(store, write_batch(tmp_path / "b", contact_rows(1)))
    person, other = store.ensure_annotator("w").id, store.ensure_annotator("v").id
    task_id = workflow.next_task(store, person).task.id
    the_key = key()
    first = workflow.submit(store, person, task_id, {"chair": [7, 3, 3, 6889]}, the_key, seconds_spent=12.5,
                            client_info={"browser": "test"})
    again = workflow.submit(store, person, task_id, {"chair": [1]}, the_key)
    assert again.duplicate and not first.duplicate and again.submission_id == first.submission_id
    assert count_rows(store, models.SubmissionRow) == 1
    workflow.next_task(store, other)
    with pytest.raises(PayloadError, match="already used"):
        workflow.submit(store, other, task_id, {"chair": [1]}, the_key)
    entry = load_task_annotations(store)[task_id]
    assert np.flatnonzero(entry.layers[0, 0]).tolist() == [3, 7, 6889]
    assert not entry.layers[0, 1].any()  # the absent "supporting" layer is stored as no contact


def test_object_affordance_tasks_take_per_point_values(make_store, tmp_path):
    store = make_store(gold_rate=0.0)
    folder = tmp_path / "b"
    folder.mkdir()
    np.savez(folder / "mug.npz", points=np.random.default_rng(0).random((32, 3)))
    write_batch(folder, [{"image": "img0.png", "kind": "object_affordance", "labels": ["grasp"],
                          "object": "mug.npz", "object_class": "mug"}])
    import_batch(store, folder)
    person = store.ensure_annotator("w").id
    task = workflow.next_task(store, person).task
    assert (task.topology, task.object_class, task.labels) == ("points-32", "mug", ("grasp",))
    with pytest.raises(PayloadError, match="expected 32"):
        workflow.submit(store, person, task.id, {"grasp": [0.5] * 31}, key())
    with pytest.raises(PayloadError, match=r"finite and in \[0, 1\]"):
        workflow.submit(store, person, task.id, {"grasp": [float("nan")] * 32}, key())
    workflow.submit(store, person, task.id, {"grasp": np.linspace(0, 1, 32)}, key())
    assert store.object_points(task.object_id).shape == (32, 3)


def test_predictions_seed_tasks_and_submissions_record_them(store, tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    np.savez(folder / "pred.npz", chair=np.linspace(0, 1, 6890))
    write_batch(folder, [{"image": "img0.png", "labels": ["chair"], "prediction": "pred.npz",
                          "model_name": "baseline: category prior", "model_version": "1"}])
    import_batch(store, folder)
    person = store.ensure_annotator("w").id
    task = workflow.next_task(store, person).task
    assert task.prediction.is_baseline and task.prediction.layers["chair"].shape == (6890,)
    assert task.prediction.layers["chair"][-1] == pytest.approx(1.0)
    workflow.submit(store, person, task.id, {"chair": [1]}, key())
    with store.session() as session:
        assert session.scalar(select(models.SubmissionRow.prediction_id)) == task.prediction.id


def test_concurrent_submissions_are_exactly_once_and_never_overfill(make_store, tmp_path, backend):
    threads, per_thread = (16, 300) if backend != "sqlite-memory" else (8, 50)
    store = make_store(gold_rate=0.0)
    import_batch(store, write_batch(tmp_path / "b", contact_rows(threads * per_thread // 3, redundancy=4)))
    people = [store.ensure_annotator(f"w{i}").id for i in range(threads)]
    acknowledged, errors = [], []

    def work(person: int) -> None:
        rng = np.random.default_rng(person)
        try:
            for _ in range(per_thread):
                assignment = workflow.next_task(store, person)
                if assignment is None:
                    return
                receipt = workflow.submit(store, person, assignment.task.id,
                                          {"chair": rng.integers(0, 6890, 50).tolist()}, key())
                acknowledged.append(receipt.submission_key)
        except Exception as error:  # noqa: BLE001 - reported below with the thread's failure
            errors.append(repr(error))

    pool = [threading.Thread(target=work, args=(person,)) for person in people]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    assert len(acknowledged) == threads * per_thread
    with store.session() as session:
        stored = list(session.scalars(select(models.SubmissionRow.submission_key)))
        per_task = session.execute(select(models.SubmissionRow.task_id, func.count())
                                   .group_by(models.SubmissionRow.task_id)).all()
        filled = session.execute(select(models.TaskRow.filled, models.TaskRow.redundancy)).all()
    assert sorted(stored) == sorted(acknowledged)
    assert max(count for _, count in per_task) <= 4
    assert all(f <= r for f, r in filled)
