"""The admin's task list: filters (batch, status, topology, agreement), priority, retiring, promoting demo tasks."""
from __future__ import annotations

import uuid

import pytest
from store_helpers import write_batch, write_image

from annotations import task_admin, workflow
from annotations.batch import add_task, import_batch
from annotations.store import Store, StoreConfig
from annotations.task_admin import TaskFilters, list_tasks
from engine.errors import InputError


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 't.db'}", data_dir=tmp_path / "data", config=StoreConfig(gold_rate=0.0))
    import_batch(store, write_batch(tmp_path / "one", [{"image": f"img{i}.png", "labels": ["chair"], "redundancy": 2,
                                                        "topology": "smplh-6890"} for i in range(3)]), name="one")
    import_batch(store, write_batch(tmp_path / "two", [{"image": "img0.png", "labels": ["cup"], "redundancy": 1,
                                                        "topology": "openbody-v1"}], seed=5), name="two")
    image = write_image(tmp_path / "demo.png", 99).read_bytes()
    add_task(store, image, "demo.png", labels=["chair"], topology="openbody-v1", pool="demo")
    a, b = store.ensure_annotator("a").id, store.ensure_annotator("b").id
    # task 1: a and b agree exactly; task 2: they disagree completely; task 3: one of two submissions;
    # task 4 (batch two): its one submission.
    for person, layers in ((a, [{"chair": [1, 2, 3]}, {"chair": [10, 11]}, {"chair": [7]}, {"cup": [5]}]),
                           (b, [{"chair": [1, 2, 3]}, {"chair": [20, 21]}])):
        for paint in layers:
            task = workflow.next_task(store, person).task
            workflow.submit(store, person, task.id, paint, uuid.uuid4().hex)
    return store


def ids(store, **filters) -> list[int]:
    return [item.task_id for item in list_tasks(store, TaskFilters(**filters))]


def test_each_filter_narrows_the_list(store):
    assert ids(store) == [5, 4, 3, 2, 1]
    assert ids(store, batch_id=1) == [3, 2, 1] and ids(store, batch_id=2) == [4]
    assert ids(store, topology="openbody-v1") == [5, 4]
    assert ids(store, status="complete") == [4, 2, 1] and ids(store, status="open") == [3]
    assert ids(store, status="demo") == [5]
    assert ids(store, min_kappa=0.5) == [1], "only task 1 agrees; tasks with one submission have no kappa"
    assert ids(store, max_kappa=0.5) == [2]
    assert ids(store, batch_id=1, status="complete", max_kappa=0.99) == [2]
    row = {item.task_id: item for item in list_tasks(store)}
    assert (row[1].kappa, row[1].submissions, row[1].batch_name, row[4].kappa) == (1.0, 2, "one", None)
    assert row[2].kappa < 0 and row[5].pool == "demo"
    assert row[5].image_name == "demo.png", "a studio-made task keeps the file name it was given"


def test_bad_filters_are_refused_in_words():
    with pytest.raises(InputError, match="status must be one of"):
        TaskFilters(status="done")
    with pytest.raises(InputError, match=r"in \[-1, 1\]"):
        TaskFilters(min_kappa=3.0)


def test_priority_changes_serving_order(store):
    assert task_admin.set_priority(store, 3, "7") == 7
    assert store.task(3).priority == 7
    with pytest.raises(InputError, match="whole number"):
        task_admin.set_priority(store, 3, "high")
    with pytest.raises(InputError, match="priority must be in"):
        task_admin.set_priority(store, 3, 10**7)
    fresh = store.ensure_annotator("c").id
    assert workflow.next_task(store, fresh).task.id == 3


def test_retired_tasks_and_batches_are_served_to_nobody(store):
    task_admin.retire_task(store, 3)
    assert ids(store, status="retired") == [3]
    assert workflow.next_task(store, store.ensure_annotator("c").id) is None, "task 3 was the only open one"
    assert task_admin.retire_batch(store, 1) == 2, "tasks 1 and 2; task 3 was retired already"
    assert ids(store, status="retired") == [3, 2, 1] and ids(store, status="complete") == [4]
    with pytest.raises(InputError, match="no batch with id 9"):
        task_admin.retire_batch(store, 9)


def test_only_demo_tasks_are_promoted(store):
    with pytest.raises(InputError, match="not a demo task"):
        task_admin.promote_demo_task(store, 3)
    assert task_admin.promote_demo_task(store, 5).pool == "crowd"
    assert ids(store, status="demo") == [] and 5 in ids(store, status="open")
    assert workflow.next_task(store, store.ensure_annotator("c").id).task.id in (3, 5)
