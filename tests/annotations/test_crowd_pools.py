"""Migration 0005 on every backend: the demo pool is never served, promotion moves a task to the crowd,
unverified annotators' open assignments expire sooner (demo-pool ones never), bound sessions persist."""
from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image

from annotations import batch, models, workflow


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def task(store, seed: int, pool: str = "crowd", priority: int = 0) -> int:
    return batch.add_task(store, png(seed), f"t{seed}.png", labels=["chair"], topology="openbody-v1", redundancy=1,
                          priority=priority, pool=pool)


def test_demo_tasks_are_served_to_nobody_until_promoted(store):
    demo = [task(store, i, pool="demo", priority=100) for i in range(3)]
    crowd = task(store, 10)
    assert store.demo_task_ids() == demo[::-1] and store.task(demo[0]).pool == "demo"
    worker = store.ensure_annotator("crowd-1").id
    assert workflow.next_task(store, worker).task.id == crowd
    workflow.submit(store, worker, crowd, {}, "crowd-1-key-1")
    assert workflow.next_task(store, worker) is None
    maker = store.ensure_annotator("demo-maker").id
    workflow.assign_task(store, maker, demo[1])  # the visitor who made it holds it
    assert workflow.open_assignment(store, maker).task.id == demo[1]
    assert workflow.holds_task(store, [maker], demo[1]) and not workflow.holds_task(store, [worker], demo[1])
    assert store.promote_task(demo[0]).pool == "crowd"
    assert workflow.next_task(store, worker).task.id == demo[0]
    assert store.demo_task_ids() == [demo[2], demo[1]]


def test_unverified_assignments_expire_sooner_and_demo_ones_never(make_store):
    store = make_store(unverified_timeout_s=0.3)
    first, second, demo = task(store, 20), task(store, 21), task(store, 22, pool="demo")
    unverified = store.ensure_annotator("anon").id
    verified = store.mark_verified(store.ensure_annotator("signed").id).id
    maker = store.bind_session(store.ensure_annotator("demo-x").id, "ab" * 32).id
    held = {workflow.next_task(store, unverified).task.id, workflow.next_task(store, verified).task.id}
    assert held == {first, second}
    workflow.assign_task(store, maker, demo)
    time.sleep(0.45)
    store.last_expiry_check = float("-inf")
    late = store.mark_verified(store.ensure_annotator("late").id).id
    assert workflow.next_task(store, late) is not None  # the unverified worker's task came free
    assert workflow.open_assignment(store, unverified) is None
    assert workflow.open_assignment(store, verified) is not None
    assert workflow.open_assignment(store, maker).task.id == demo
    assert store.annotator(maker).bound_session == "ab" * 32 and store.annotator(verified).verified


def test_next_task_never_claims_a_task_on_a_body_the_caller_cannot_show(store):
    missing = batch.add_task(store, png(40), "m.png", labels=["chair"], topology="smplh-6890", redundancy=2,
                             priority=50)
    shown = task(store, 41)
    points = np.random.default_rng(0).random((16, 3)).astype(np.float32)
    obj = batch.add_task(store, png(42), "o.png", labels=["sit"], kind="object_affordance", topology="points-16",
                         object_points=points, object_class="chair", redundancy=1, priority=10)
    worker = store.ensure_annotator("open-body-only").id
    served = []
    while (assignment := workflow.next_task(store, worker, bodies={"openbody-v1"})) is not None:
        served.append(assignment.task.id)
        workflow.skip(store, worker, assignment.task.id)
    assert served == [obj, shown]  # the object task needs no body; the smplh task is never claimed
    assert workflow.holds_task(store, [worker], obj) and not workflow.holds_task(store, [worker], missing)
    with store.session() as session:
        assert session.get(models.TaskRow, missing).filled == 0  # no slot taken
    # Nothing claimable with no bodies at all but object tasks; with the body, the task is served first.
    assert workflow.next_task(store, store.ensure_annotator("no-bodies").id, bodies=()).task.id == obj
    assert workflow.next_task(store, store.ensure_annotator("has-smplh").id, bodies=["smplh-6890"]).task.id == missing
    assert workflow.next_task(store, store.ensure_annotator("no-limit").id).task.id == missing
