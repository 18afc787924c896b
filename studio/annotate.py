"""``/annotate``: the crowd annotator's page. Next task, the painter with its pre-annotation, submit / skip / flag.

Identity comes from the login (when annotator logins are configured; a ``?worker=`` in the URL is then
ignored) or from the ``?worker=`` id in the URL, as crowd platforms send it, signed or not
(``studio.crowd``). It is resolved once per page session on the server, kept in ``gr.State`` and bound
to the browser's session cookie: every later event must carry the same cookie, so neither another
annotator nor a client that learnt the Gradio session hash can act for this one. A submission's
key is derived from its assignment, so a double click or a resent request stores it once, and a page
reload hands back the open assignment (or the next task, once it was submitted).
"""
from __future__ import annotations

import functools
import hmac
import html
import logging
from dataclasses import dataclass, replace
from urllib.parse import parse_qs

import gradio as gr
import numpy as np

from annotations import workflow
from annotations.domain import Assignment, Task
from engine.contact.prior import PRIOR_SOURCE, predict_category_prior
from engine.errors import InputError
from studio.context import STORE_LANE, Studio, user_errors
from studio.crowd import client_address, session_digest, start_identity
from studio.exports import label_colours
from studio.painter_api import CHECK_PATH, ticket_for
from studio.painter import READ_JS, counts_html, painter_component, payload_json, read_painting

# The page hands over its whole query string ("?worker=ID&sig=HEX"); API callers may send a bare worker id.
WORKER_JS = "() => window.location.search || ''"
CHECK_LANE = "painter-check"
log = logging.getLogger("studio.security")
NO_TASK = "No task is waiting for you right now. Thank you! Come back later or close this page."


@dataclass(frozen=True)
class Session:
    """One browser session of one annotator (kept server-side in ``gr.State``)."""

    annotator_id: int
    external_id: str
    browser: str = ""  # SHA-256 of the studio-session cookie this page session is bound to
    demo: bool = False  # a demo visitor's worker id: only its own demo tasks, never the crowd queue
    done: int = 0
    assignment_id: int | None = None
    task_id: int | None = None
    kind: str | None = None
    topology: str | None = None
    labels: tuple[str, ...] = ()


def start_session(studio: Studio, worker: str, username: str | None, *, signature: str = "",
                  browser: str | None = None, address: str = "unknown") -> Session:
    """The annotator behind this request (``studio.crowd.start_identity`` says who may be whom)."""
    annotator = start_identity(studio, str(worker or ""), str(signature or ""), username, browser, address)
    return Session(annotator.id, annotator.external_id, browser=browser, demo=annotator.bound_session is not None)


def worker_from_link(value) -> tuple[str, str]:
    """(worker id, signature) from the page's query string ("?worker=ID&sig=HEX") or a bare worker id."""
    text = str(value or "")
    if len(text) > 2048:
        raise InputError("the link is too long; open the link you received")
    if not text.startswith("?"):
        return text, ""  # a bare worker id, checked as it is
    query = parse_qs(text[1:], keep_blank_values=True)
    return (query.get("worker") or [""])[0].strip(), (query.get("sig") or [""])[0].strip()


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


def no_worker_message(request) -> str:
    """What a page opened without ``?worker=`` says: the link to open, absolute (Markdown makes it a link)."""
    url = getattr(request, "url", None)
    base = f"{url.scheme}://{url.netloc}" if url is not None and url.netloc else ""
    example = f"{base}/annotate?worker=YOUR_ID"
    return (f"This page needs your worker id. Open the link your study gave you, or <{example}> with "
            "YOUR_ID replaced by your id.")


def task_view(studio: Studio, session: Session, assignment: Assignment | None, message: str = ""):
    """(session, image, task text, progress text, painter payload, status) for the page.

    The page's event carries only URLs: the mesh, the starting layers and the image are cached,
    content-addressed responses the browser fetches itself (``studio.payloads``)."""
    progress = f"**{session.done}** done this session"
    if assignment is None:
        return session, "", NO_TASK, progress, "", message
    task = assignment.task
    _, source = pre_annotation_source(task)
    if task.kind == "human_contact":
        what = "contact with " + ", ".join(f"<b>{html.escape(label)}</b>" for label in task.labels)
    else:
        what = (f"where a person would <b>{html.escape(task.labels[0])}</b> on the "
                f"<b>{html.escape(task.object_class or 'object')}</b>")
    text = f"<div id='task-text'>Task {task.id}: paint {what}. Pre-annotation: {html.escape(source)}.</div>"
    payloads = studio.payloads
    image_url = payloads.image_url(task)
    payload = payload_json(mesh_url=task_mesh_url(studio, task), kind=task.kind, topology=task.topology,
                           task_id=task.id, labels=task.labels, annotation_url=payloads.annotation_url(task),
                           image_url=image_url, check=(CHECK_PATH, ticket_for(studio.painter_ticket_key,
                                                                               session.annotator_id, task.id,
                                                                               session.browser or "")))
    image = (f'<img id="task-image-view" src="{html.escape(image_url)}" alt="the task image" '
             'style="max-width:100%;height:auto">')
    return session, image, text, progress, payload, message


def pre_annotation_source(task: Task) -> tuple[bool, str]:
    """(whether the task has a stored prediction, the name shown for the pre-annotation)."""
    if task.prediction is not None:
        return True, task.prediction.model_name
    return False, PRIOR_SOURCE if task.kind == "human_contact" else "none"


def task_mesh_url(studio: Studio, task: Task) -> str:
    """The body's cached mesh URL (content-addressed); an object's mesh from its task route."""
    if task.kind == "human_contact":
        return studio.payloads.body_url(task.topology)
    return mesh_url(task)


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
    painting = painting_for(session, painted)
    receipt = workflow.submit(studio.store, session.annotator_id, session.task_id, layers_for_store(session, painting),
                              f"studio-assignment-{session.assignment_id}", seconds_spent=painting.seconds,
                              client_info={"client": "studio"}, topology=session.topology)
    done = session.done + (0 if receipt.duplicate else 1)
    return replace(session, done=done), f"Submitted task {receipt.task_id}" + (" (already stored)" if receipt.duplicate else "")


def painting_for(session: Session, painted: str):
    """The painter's JSON read and checked against the task this session holds."""
    count = int(session.topology.removeprefix("points-")) if session.kind != "human_contact" else None
    painting = read_painting(painted, session.labels, session.topology, count)
    if painting.task_id is not None and painting.task_id != session.task_id:
        raise InputError("the painter shows another task than the one you hold; reload the page")
    return painting


def check_painting(session: Session, painted: str) -> str:
    """The sync event: validate the painting as submit would, and report what the server sees."""
    if session is None or session.task_id is None:
        return ""
    return counts_html(painting_for(session, painted), label_colours(session.labels))


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
                image = gr.HTML(elem_id="task-image")  # an <img> of the task's cached image URL (studio.payloads)
                task_text = gr.HTML(elem_id="task-info")
                progress = gr.Markdown(elem_id="progress")
                status = gr.Markdown(elem_id="status")
                submit = gr.Button("Submit", variant="primary", elem_id="submit", interactive=False)
                with gr.Row():
                    skip = gr.Button("Skip", elem_id="skip", interactive=False)
                    reason = gr.Dropdown(list(workflow.FLAG_REASONS), value=workflow.FLAG_REASONS[0],
                                         label="flag reason", elem_id="flag-reason", interactive=False)
                    flag = gr.Button("Flag", elem_id="flag", interactive=False)
        outputs = [session, image, task_text, progress, payload, status]
        lane = {"concurrency_id": STORE_LANE, "concurrency_limit": studio.settings.store_concurrency}

        @user_errors
        def on_start(link, request: gr.Request):
            worker_id, sig = worker_from_link(link)
            if not worker_id and not studio.settings.annotator_logins:
                # Said on the page, with the link to use (absolute and clickable), not in a passing toast.
                return None, "", NO_TASK, "", "", no_worker_message(request)
            state = start_session(studio, worker_id, getattr(request, "username", None), signature=sig,
                                  browser=session_digest(request), address=client_address(request))
            return _advance(studio, state, "")

        @user_errors
        def on_submit(painted_json, state, request: gr.Request):
            state, message = submit_painting(studio, _require(state, request), painted_json)
            return _advance(studio, state, message)

        @user_errors
        def on_skip(state, request: gr.Request):
            state = _require(state, request)
            workflow.skip(studio.store, state.annotator_id, _require_task(state))
            return _advance(studio, state, f"Skipped task {state.task_id}")

        @user_errors
        def on_flag(flag_reason, state, request: gr.Request):
            state = _require(state, request)
            workflow.flag(studio.store, state.annotator_id, _require_task(state), flag_reason)
            return _advance(studio, state, f"Flagged task {state.task_id} ({html.escape(str(flag_reason))})")

        @user_errors
        def on_sync(painted_json, state, request: gr.Request):
            return check_painting(_require(state, request) if state is not None else None, painted_json)

        # A new task (or none) comes with the controls' state (no second event per task): the server's check of
        # the previous painting goes, and the task buttons are enabled exactly when there is a task.
        task_outputs = outputs + [server_counts, submit, skip, flag, reason]

        page.load(with_controls(on_start), inputs=[worker], outputs=task_outputs, js=WORKER_JS,
                  api_name="start_session", **lane)
        submit.click(with_controls(on_submit), inputs=[painted, session], outputs=task_outputs, js=READ_JS,
                     api_name="submit", **lane)
        skip.click(with_controls(on_skip), inputs=[session], outputs=task_outputs, api_name="skip", **lane)
        flag.click(with_controls(on_flag), inputs=[reason, session], outputs=task_outputs, api_name="flag", **lane)
        # The check never touches the store, so it has its own lane and never waits behind submits; a stroke
        # that ends while the previous check runs is checked right after it (always_last), never dropped.
        sync.click(on_sync, inputs=[painted, session], outputs=[server_counts], js=READ_JS, api_name="check_painting",
                   concurrency_id=CHECK_LANE, concurrency_limit=studio.settings.store_concurrency,
                   trigger_mode="always_last", show_progress="hidden")
    return page


def with_controls(handler):
    """The handler's six outputs (``task_view``) and the controls for them: the server's check cleared, and
    Submit, Skip, Flag and the flag reason enabled exactly when a task is shown."""
    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        result = handler(*args, **kwargs)
        active = gr.update(interactive=bool(result[4]))
        return (*result, "", active, active, active, active)
    return wrapper


def _require(state: Session | None, request=None) -> Session:
    """The page session's annotator, once the request proves it comes from the same browser."""
    if state is None:
        raise InputError("this page has no annotator yet; open it with ?worker=YOUR_ID")
    browser = session_digest(request)
    if browser is None or not hmac.compare_digest(browser, state.browser):
        log.warning("an event for annotator %r came from another browser (%s); refused", state.external_id,
                    client_address(request))
        raise InputError("this page session belongs to another browser; reload the page")
    return state


def _require_task(state: Session) -> int:
    if state.task_id is None:
        raise InputError("there is no open task; ask for the next one")
    return state.task_id


def _advance(studio: Studio, state: Session, message: str):
    """Show the annotator's open assignment, or claim the next task (None when nothing is left).

    A demo visitor only ever gets the demo task it made, never the crowd queue. A task on a body this
    server has not installed is never handed out (nobody could paint it)."""
    if state.demo:
        assignment = workflow.open_assignment(studio.store, state.annotator_id)
    else:
        assignment = workflow.next_task(studio.store, state.annotator_id, bodies=studio.available_bodies())
    return task_view(studio, open_task(state, assignment), assignment, message)
