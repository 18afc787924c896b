"""``workflow.ticket_holder``: the one read behind a painter ticket's actions (studio.painter_api)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from annotations import batch, workflow


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def new_task(store, seed: int) -> int:
    return batch.add_task(store, png(seed), f"t{seed}.png", labels=["chair"], topology="openbody-v1", redundancy=2)


def test_the_holder_is_the_annotator_with_its_assignment_of_the_task(make_store):
    store = make_store()
    first, second = new_task(store, 1), new_task(store, 2)
    worker = store.ensure_annotator("holder-1")
    assert workflow.ticket_holder(store, worker.id, first) is None  # never given the task
    assignment = workflow.next_task(store, worker.id)
    assert assignment.task.id == first
    holder = workflow.ticket_holder(store, worker.id, first)
    assert holder == workflow.TaskHolder(worker.id, "holder-1", False, assignment.id)
    assert workflow.ticket_holder(store, worker.id, second) is None  # a task it does not hold
    other = store.ensure_annotator("holder-2")
    assert workflow.ticket_holder(store, other.id, first) is None  # another annotator's task
    # a finished assignment still names its holder (a resent submit or skip answers as the first did)
    workflow.skip(store, worker.id, first)
    assert workflow.ticket_holder(store, worker.id, first) == holder


def test_a_demo_visitor_is_named_as_one_and_bad_ids_hold_nothing(make_store):
    store = make_store()
    task = new_task(store, 3)
    visitor = store.bind_session(store.ensure_annotator("demo-visitor").id, "ab" * 32)
    assignment = workflow.assign_task(store, visitor.id, task)
    assert workflow.ticket_holder(store, visitor.id, task) == workflow.TaskHolder(visitor.id, "demo-visitor", True,
                                                                                   assignment.id)
    for annotator_id, task_id in ((0, task), (visitor.id, 0), (-1, task), (2**63, task), (visitor.id, 10**20)):
        assert workflow.ticket_holder(store, annotator_id, task_id) is None
