"""``/annotate``: the crowd annotator's page. Next task, the painter with its pre-annotation, submit / skip / flag.

Identity comes from the login (when annotator logins are configured) or from the opaque ``?worker=``
id in the URL, as crowd platforms send it. It is resolved once per browser session on the server and
kept in ``gr.State`` (server-side), so no later event can act for another annotator. A submission's
key is derived from its assignment, so a double click or a resent request stores it once, and a page
reload hands back the open assignment (or the next task, once it was submitted).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, replace

import gradio as gr
import numpy as np
from PIL import Image

from annotations import workflow
from annotations.domain import Assignment, Task
from annotations.store import check_external_id
from engine.contact.prior import PRIOR_SOURCE, predict_category_prior
from engine.errors import InputError
from studio.context import STORE_LANE, Studio, user_errors
from studio.exports import label_colours
from studio.painter import READ_JS, counts_html, painter_component, payload_json, read_painting

WORKER_JS = "() => new URLSearchParams(window.location.search).get('worker') || ''"
CHECK_LANE = "painter-check"
NO_TASK = "No task is waiting for you right now. Thank you! Come back later or close this page."


@dataclass(frozen=True)
class Session:
    """One browser session of one annotator (kept server-side in ``gr.State``)."""

    annotator_id: int
    external_id: str
    done: int = 0
    assignment_id: int | None = None
    task_id: int | None = None
    kind: str | None = None
    topology: str | None = None
    labels: tuple[str, ...] = ()


def start_session(studio: Studio, worker: str, username: str | None) -> Session:
    """The annotator behind this request: the login name wins over the URL's worker id."""
    identity = username or worker
    if not identity:
        raise InputError("open this page with your worker id, e.g. /annotate?worker=YOUR_ID")
    annotator = studio.store.ensure_annotator(check_external_id(identity))
    if annotator.role != "annotator":
        raise InputError("this id belongs to an admin account; annotators use their own worker id")
    return Session(annotator.id, annotator.external_id)


def open_task(session: Session, assignment: Assignment | None) -> Session:
    if assignment is None:
        return replace(session, assignment_id=None, task_id=None, kind=None, topology=None, labels=())
    task = assignment.task
    return replace(session, assignment_id=assignment.id, task_id=task.id, kind=task.kind, topology=task.topology,
                   labels=task.labels)


def pre_annotation(studio: Studio, task: Task) -> tuple[dict[str, np.ndarray], str]:
    """The task's stored prediction, else the category prior on the task's body; and where it came from."""
    if task.prediction is not None:
        return dict(task.prediction.layers), task.prediction.model_name
    if task.kind != "human_contact":
        return {}, "none"
    body = studio.body(task.topology)
    return {label: predict_category_prior(body, label).probabilities for label in task.labels}, PRIOR_SOURCE


def mesh_url(task: Task) -> str:
    if task.kind == "human_contact":
        return f"/studio/mesh/body/{task.topology}.json"
    return f"/studio/mesh/task/{task.id}.json"


def task_view(studio: Studio, session: Session, assignment: Assignment | None, message: str = ""):
    """(session, image, task text, progress text, painter payload, status) for the page."""
    progress = f"**{session.done}** done this session"
    if assignment is None:
        return session, None, NO_TASK, progress, "", message
    task = assignment.task
    prediction, source = pre_annotation(studio, task)
    image = np.asarray(Image.open(task.image.path).convert("RGB"))
    if task.kind == "human_contact":
        what = "contact with " + ", ".join(f"<b>{html.escape(label)}</b>" for label in task.labels)
    else:
        what = (f"where a person would <b>{html.escape(task.labels[0])}</b> on the "
                f"<b>{html.escape(task.object_class or 'object')}</b>")
    text = f"<div id='task-text'>Task {task.id}: paint {what}. Pre-annotation: {html.escape(source)}.</div>"
    payload = payload_json(mesh_url=mesh_url(task), kind=task.kind, topology=task.topology, task_id=task.id,
                           labels=task.labels, prediction=prediction)
    return session, image, text, progress, payload, message


def layers_for_store(session: Session, painting) -> dict:
    """Human contact stores vertex ids; an affordance stores one value per point (1 where painted)."""
    if session.kind == "human_contact":
        return dict(painting.layers)
    count = int(session.topology.removeprefix("points-"))
    values = {}
    for label, ids in painting.layers.items():
        values[label] = np.zeros(count, dtype=np.float32)
        values[label][ids] = 1.0
    return values


def submit_painting(studio: Studio, session: Session, painted: str) -> tuple[Session, str]:
    if session.task_id is None:
        raise InputError("there is no open task to submit; ask for the next one")
    count = int(session.topology.removeprefix("points-")) if session.kind != "human_contact" else None
    painting = read_painting(painted, session.labels, session.topology, count)
    if painting.task_id is not None and painting.task_id != session.task_id:
        raise InputError("the painter shows another task than the one you hold; reload the page")
    receipt = workflow.submit(studio.store, session.annotator_id, session.task_id, layers_for_store(session, painting),
                              f"studio-assignment-{session.assignment_id}", seconds_spent=painting.seconds,
                              client_info={"client": "studio"}, topology=session.topology)
    done = session.done + (0 if receipt.duplicate else 1)
    return replace(session, done=done), f"Submitted task {receipt.task_id}" + (" (already stored)" if receipt.duplicate else "")


def check_painting(session: Session, painted: str) -> str:
    """The sync event: validate the painting as submit would, and report what the server sees."""
    if session is None or session.task_id is None:
        return ""
    count = int(session.topology.removeprefix("points-")) if session.kind != "human_contact" else None
    return counts_html(read_painting(painted, session.labels, session.topology, count), label_colours(session.labels))


def build_annotate(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title="Interaction Studio: annotate") as page:
        gr.Markdown("# Paint the contact\nPaint every body region that touches each listed object. Left-drag paints, "
                    "right-drag turns the body, the wheel zooms. Switch layers for each object; *Part* fills a whole "
                    "body part with one click.")
        session = gr.State(None)
        worker = gr.Textbox(visible="hidden", elem_id="worker-id")
        with gr.Row():
            with gr.Column(scale=2):
                _, payload, painted, sync = painter_component()
                server_counts = gr.HTML(elem_id="server-counts")
            with gr.Column(scale=1):
                image = gr.Image(label="image", interactive=False, elem_id="task-image")
                task_text = gr.HTML(elem_id="task-info")
                progress = gr.Markdown(elem_id="progress")
                status = gr.Markdown(elem_id="status")
                submit = gr.Button("Submit", variant="primary", elem_id="submit")
                with gr.Row():
                    skip = gr.Button("Skip", elem_id="skip")
                    reason = gr.Dropdown(list(workflow.FLAG_REASONS), value=workflow.FLAG_REASONS[0],
                                         label="flag reason", elem_id="flag-reason")
                    flag = gr.Button("Flag", elem_id="flag")
        outputs = [session, image, task_text, progress, payload, status]
        lane = {"concurrency_id": STORE_LANE, "concurrency_limit": studio.settings.store_concurrency}

        @user_errors
        def on_start(worker_id, request: gr.Request):
            return _advance(studio, start_session(studio, worker_id, getattr(request, "username", None)), "")

        @user_errors
        def on_submit(painted_json, state):
            state, message = submit_painting(studio, _require(state), painted_json)
            return _advance(studio, state, message)

        @user_errors
        def on_skip(state):
            state = _require(state)
            workflow.skip(studio.store, state.annotator_id, _require_task(state))
            return _advance(studio, state, f"Skipped task {state.task_id}")

        @user_errors
        def on_flag(flag_reason, state):
            state = _require(state)
            workflow.flag(studio.store, state.annotator_id, _require_task(state), flag_reason)
            return _advance(studio, state, f"Flagged task {state.task_id} ({html.escape(str(flag_reason))})")

        @user_errors
        def on_sync(painted_json, state):
            return check_painting(state, painted_json)

        page.load(on_start, inputs=[worker], outputs=outputs, js=WORKER_JS, api_name="start_session", **lane)
        submit.click(on_submit, inputs=[painted, session], outputs=outputs, js=READ_JS, api_name="submit", **lane)
        skip.click(on_skip, inputs=[session], outputs=outputs, api_name="skip", **lane)
        flag.click(on_flag, inputs=[reason, session], outputs=outputs, api_name="flag", **lane)
        # The check never touches the store, so it has its own lane and never waits behind submits; a stroke
        # that ends while the previous check runs is checked right after it (always_last), never dropped.
        sync.click(on_sync, inputs=[painted, session], outputs=[server_counts], js=READ_JS, api_name="check_painting",
                   concurrency_id=CHECK_LANE, concurrency_limit=studio.settings.store_concurrency,
                   trigger_mode="always_last", show_progress="hidden")
    return page


def _require(state: Session | None) -> Session:
    if state is None:
        raise InputError("this page has no annotator yet; open it with ?worker=YOUR_ID")
    return state


def _require_task(state: Session) -> int:
    if state.task_id is None:
        raise InputError("there is no open task; ask for the next one")
    return state.task_id


def _advance(studio: Studio, state: Session, message: str):
    """Show the annotator's open assignment, or claim the next task (None when nothing is left)."""
    assignment = workflow.next_task(studio.store, state.annotator_id)
    return task_view(studio, open_task(state, assignment), assignment, message)
