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
import json
import logging
import re
from dataclasses import dataclass, replace
from urllib.parse import parse_qs

import gradio as gr
import numpy as np

from annotations import workflow
from annotations.domain import Assignment, Task
from engine.contact.prior import OBJECT_PARTS, PRIOR_SOURCE, predict_category_prior
from engine.errors import InputError
from studio.context import STORE_LANE, Studio, user_errors
from studio.crowd import client_address, session_digest, start_identity
from studio.exports import label_colours
from studio.painter_api import ACTION_PATHS, CHECK_PATH, ticket_for
from studio.painter import READ_JS, counts_html, painter_component, payload_json, read_painting

# The page hands over its whole query string ("?worker=ID&sig=HEX"); API callers may send a bare worker id.
WORKER_JS = "() => window.location.search || ''"
CHECK_LANE = "painter-check"
log = logging.getLogger("studio.security")
# The task image beside the painter at every size. Wide screens: its own column, sticky while the page scrolls.
# Narrow screens (phones): a thumbnail fixed in a corner above the painter, tap to enlarge or shrink, so the image
# and the painter are both on screen and nothing needs a scroll in the middle of a stroke. Zoom: the wheel or
# two fingers zoom around the pointer, one finger or the mouse pans, a double click resets.
IMAGE_CSS = """
#task-row { align-items: flex-start; }
#image-column { position: sticky; top: 8px; align-self: flex-start; }
#task-image { overflow: hidden; touch-action: none; }
#task-image img { transform-origin: 0 0; will-change: transform; }
@media (max-width: 760px) {
  #task-row { flex-wrap: wrap !important; }
  #task-row > * { min-width: 100% !important; }
  #image-column { position: static; }
  #task-image { position: fixed !important; top: 8px; right: 8px; width: 38vw !important; max-height: 32vh;
                z-index: 60; box-shadow: 0 2px 10px rgba(0,0,0,.35); background: #fff; border-radius: 6px; }
  #task-image.task-image-large { width: 92vw !important; max-height: 70vh; }
}
"""
IMAGE_JS = """
if (!document.getElementById('task-image-style')) {
  const style = document.createElement('style');
  style.id = 'task-image-style';
  style.textContent = %s;
  document.head.appendChild(style);
}
if (!window.studioImageZoom) {
  const zoom = window.studioImageZoom = { scale: 1, x: 0, y: 0, pointers: new Map(), moved: false };
  const host = () => document.getElementById('task-image');
  const picture = () => host() && host().querySelector('img');
  const apply = () => {
    const img = picture();
    if (!img) return;
    img.style.transform = `translate(${zoom.x}px, ${zoom.y}px) scale(${zoom.scale})`;
    host().dataset.zoom = zoom.scale.toFixed(3);
  };
  const zoomAt = (clientX, clientY, factor) => {
    const img = picture();
    if (!img) return;
    const box = host().getBoundingClientRect();
    const px = clientX - box.left, py = clientY - box.top;
    const scale = Math.min(8, Math.max(1, zoom.scale * factor));
    zoom.x = scale === 1 ? 0 : px - (px - zoom.x) * (scale / zoom.scale);
    zoom.y = scale === 1 ? 0 : py - (py - zoom.y) * (scale / zoom.scale);
    zoom.scale = scale;
    apply();
  };
  zoom.reset = () => { zoom.scale = 1; zoom.x = 0; zoom.y = 0; apply(); };
  const inImage = (event) => event.target instanceof Element && event.target.closest('#task-image') && picture();
  document.addEventListener('wheel', (event) => {
    if (!inImage(event)) return;
    event.preventDefault();
    zoomAt(event.clientX, event.clientY, Math.exp(-event.deltaY * 0.0015));
  }, { passive: false });
  document.addEventListener('pointerdown', (event) => {
    if (!inImage(event)) return;
    zoom.pointers.set(event.pointerId, [event.clientX, event.clientY]);
    zoom.moved = false;
  });
  document.addEventListener('pointermove', (event) => {
    const last = zoom.pointers.get(event.pointerId);
    if (!last) return;
    const points = [...zoom.pointers.values()];
    if (zoom.pointers.size === 2) {
      const other = points.find((p) => p !== last);
      const before = Math.hypot(last[0] - other[0], last[1] - other[1]);
      const after = Math.hypot(event.clientX - other[0], event.clientY - other[1]);
      if (before > 0) zoomAt((event.clientX + other[0]) / 2, (event.clientY + other[1]) / 2, after / before);
    } else if (zoom.scale > 1) {
      zoom.x += event.clientX - last[0];
      zoom.y += event.clientY - last[1];
      apply();
    }
    if (Math.hypot(event.clientX - last[0], event.clientY - last[1]) > 2) zoom.moved = true;
    zoom.pointers.set(event.pointerId, [event.clientX, event.clientY]);
  });
  const release = (event) => {
    if (!zoom.pointers.delete(event.pointerId)) return;
    if (event.type === 'pointerup' && !zoom.moved && zoom.pointers.size === 0 && inImage(event)
        && window.matchMedia('(max-width: 760px)').matches) {
      host().classList.toggle('task-image-large');  // a tap on a phone enlarges or shrinks the thumbnail
    }
  };
  document.addEventListener('pointerup', release);
  document.addEventListener('pointercancel', release);
  document.addEventListener('dblclick', (event) => { if (inImage(event)) zoom.reset(); });
  document.addEventListener('load', (event) => {  // a new task's image starts unzoomed
    if (event.target instanceof HTMLImageElement && event.target.closest('#task-image')) zoom.reset();
  }, true);
}
""" % json.dumps(IMAGE_CSS)
# The flag dropdown: (what the annotator reads, what is stored); "other" takes the typed reason.
FLAG_CHOICES = [(workflow.FLAG_REASON_WORDS[reason], reason) for reason in workflow.FLAG_REASONS] + [
    ("Something else (type it below)", "other")]
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
    seed: dict | None = None  # the prediction the painter opened with (``seed_info``), stored with the submission


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
        return replace(session, assignment_id=None, task_id=None, kind=None, topology=None, labels=(), seed=None)
    task = assignment.task
    return replace(session, assignment_id=assignment.id, task_id=task.id, kind=task.kind, topology=task.topology,
                   labels=task.labels, seed=None)


# Object painter words: what to paint for each affordance, "{object}" being the task's object class.
AFFORDANCE_PHRASES = {
    "grasp": "where a hand would grasp the {object}", "contain": "where the {object} holds what it contains",
    "lift": "where hands would hold the {object} to lift it", "open": "what a hand would touch to open the {object}",
    "lay": "where a person would lie on the {object}", "sit": "where a person would sit on the {object}",
    "support": "where the {object} would bear a person's weight",
    "wrapgrasp": "where a hand would wrap around the {object}", "pour": "where liquid would pour out of the {object}",
    "move": "where hands would hold the {object} to move it", "display": "where the {object} shows its picture",
    "push": "where a hand would push the {object}", "listen": "where the {object} would touch the ear to listen",
    "wear": "where the {object} would touch the body when worn", "press": "where a finger would press the {object}",
    "cut": "the part of the {object} that cuts", "stab": "the part of the {object} that stabs",
    "pull": "where a hand would pull the {object}", "ride": "where a person would sit or stand to ride the {object}",
    "play": "where hands would touch the {object} to play it", "carry": "where hands would hold the {object} to carry it",
}


# Where the surface to paint usually faces on an object (metres, Y up, its front towards +Z): the painter opens
# looking from there. Other affordances: from the front, a little above and to the side.
AFFORDANCE_VIEWS = {"sit": (0.0, 1.0, 1.0), "lay": (0.0, 1.2, 1.0), "support": (0.0, 1.0, 1.0), "ride": (0.3, 1.0, 1.0),
                    "contain": (0.0, 1.5, 1.0), "pour": (0.5, 0.8, 1.0), "display": (0.0, 0.2, 1.0)}
DEFAULT_OBJECT_VIEW = (0.4, 0.5, 1.0)


def object_view(affordance: str, points: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """(3,) unit direction from the object's centre to the painter's opening camera: towards the predicted
    surface (the values' weighted centroid) when a prediction marks one, else the affordance's usual side.
    Never straight up or down (the camera keeps Y up)."""
    points = np.asarray(points, dtype=np.float64)
    direction = np.asarray(AFFORDANCE_VIEWS.get(affordance, DEFAULT_OBJECT_VIEW), dtype=np.float64)
    if values is not None and len(values) == len(points) and float(np.sum(values)) > 0:
        weights = np.clip(np.asarray(values, dtype=np.float64), 0, None)
        offset = weights @ points / weights.sum() - points.mean(0)
        extent = float(np.ptp(points, axis=0).max()) or 1.0
        if np.linalg.norm(offset) > 0.05 * extent:  # the prediction marks one side of the object
            direction = offset / np.linalg.norm(offset) + np.array([0.0, 0.3, 0.0])
    direction = direction / np.linalg.norm(direction)
    if abs(direction[1]) > 0.9:
        direction = direction + np.array([0.0, 0.0, 0.6])
    return direction / np.linalg.norm(direction)


def affordance_words(affordance: str, object_class: str | None) -> str:
    """The object painter's instruction, e.g. "where a person would sit on the chair" (escaped HTML)."""
    phrase = AFFORDANCE_PHRASES.get(affordance, f"where a person would {affordance} the {{object}}")
    return html.escape(phrase).replace("{object}", f"<b>{html.escape(object_class or 'object')}</b>")


def body_available(studio: Studio, task: Task) -> bool:
    """Whether the server can show the task's body (always true for object tasks)."""
    return task.kind != "human_contact" or task.topology in studio.available_bodies()


@functools.lru_cache(maxsize=1)
def prior_version() -> str:
    """The category prior's version: the hash of its table (a changed table is a new version)."""
    import hashlib

    table = json.dumps({label: dict(parts) for label, parts in OBJECT_PARTS.items()}, sort_keys=True)
    return "table-" + hashlib.sha256(table.encode()).hexdigest()[:12]


def pre_annotation(studio: Studio, task: Task) -> tuple[dict[str, np.ndarray], str]:
    """The task's stored prediction, else the category prior on the task's body; and where it came from.
    Nothing ("none") when the task's body is not installed: the page still works, for Skip and Flag."""
    if task.prediction is not None:
        return dict(task.prediction.layers), task.prediction.model_name
    if task.kind != "human_contact" or not body_available(studio, task):
        return {}, "none"
    body = studio.body(task.topology)
    return {label: predict_category_prior(body, label).probabilities for label in task.labels}, PRIOR_SOURCE


def seed_info(task: Task, source: str) -> dict | None:
    """What seeded the painting (recorded with the submission; the export's manifest carries it):
    model name, version and where the prediction came from."""
    if task.prediction is not None:
        origin = str((task.prediction.parameters or {}).get("source") or "imported with the task")
        return {"model_name": task.prediction.model_name, "model_version": task.prediction.model_version,
                "source": origin}
    if source == PRIOR_SOURCE:
        return {"model_name": PRIOR_SOURCE, "model_version": prior_version(),
                "source": "computed by the studio for the painter"}
    return None


def mesh_url(task: Task) -> str:
    if task.kind == "human_contact":
        return f"/studio/mesh/body/{task.topology}.json"
    return f"/studio/mesh/task/{task.id}.json"


def reason_words(stored: str) -> str:
    """A stored flag reason in words (not escaped)."""
    if stored.startswith(workflow.OTHER_REASON):
        return stored[len(workflow.OTHER_REASON):]
    return workflow.FLAG_REASON_WORDS.get(stored, stored)


def no_worker_message(request) -> str:
    """What a page opened without ``?worker=`` says: the link to open, absolute (Markdown makes it a link)."""
    example = f"{site_base(request)}/annotate?worker=YOUR_ID"
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
    source = pre_annotation_source(studio, task)
    session = replace(session, seed=seed_info(task, source))
    if task.kind == "human_contact":
        what = "contact with " + ", ".join(f"<b>{html.escape(label)}</b>" for label in task.labels)
    else:
        what = affordance_words(task.labels[0], task.object_class)
    text = f"<div id='task-text'>Task {task.id}: paint {what}. Pre-annotation: {html.escape(source)}.</div>"
    if not body_available(studio, task):
        text += ("<div id='task-unavailable'>This task's body is not installed on this server, so it cannot be "
                 "painted. Please press <b>Skip</b> (or <b>Flag</b> it).</div>")
    view = None
    if task.kind == "object_affordance":
        stored = task.prediction.layers.get(task.labels[0]) if task.prediction is not None else None
        view = object_view(task.labels[0], studio.store.object_points(task.object_id), stored)
    payloads = studio.payloads
    payloads.hand_out(task, session.browser)  # its parts' URLs and the ticket's actions need no database read
    image_url = payloads.image_url(task)
    payload = payload_json(mesh_url=task_mesh_url(studio, task), kind=task.kind, topology=task.topology,
                           task_id=task.id, labels=task.labels, view=view, annotation_url=payloads.annotation_url(task),
                           image_url=image_url, check=(CHECK_PATH, ticket_for(studio.painter_ticket_key,
                                                                               session.annotator_id, task.id,
                                                                               session.browser or "")))
    image = (f'<img id="task-image-view" src="{html.escape(image_url)}" alt="the task image" '
             'style="max-width:100%;height:auto">')
    return session, image, text, progress, payload, message


def pre_annotation_source(studio: Studio, task: Task) -> str:
    """The name of what ``pre_annotation`` gives the painter, without computing it."""
    if task.prediction is not None:
        return task.prediction.model_name
    return PRIOR_SOURCE if task.kind == "human_contact" and body_available(studio, task) else "none"


def task_mesh_url(studio: Studio, task: Task) -> str:
    """The body's cached mesh URL (content-addressed); an object's mesh from its task route."""
    if task.kind == "human_contact" and body_available(studio, task):
        return studio.payloads.body_url(task.topology)
    return mesh_url(task)  # an object's mesh, or a missing body's route (which says so in words)


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
    if session.kind == "human_contact" and session.topology not in studio.available_bodies():
        raise InputError("this task's body is not installed on this server, so it cannot be painted; "
                         "press Skip or Flag")
    painting = painting_for(session, painted)
    info = {"client": "studio", **({"seed": session.seed} if session.seed else {})}
    receipt = workflow.submit(studio.store, session.annotator_id, session.task_id, layers_for_store(session, painting),
                              f"studio-assignment-{session.assignment_id}", seconds_spent=painting.seconds,
                              client_info=info, topology=session.topology)
    done = session.done + (0 if receipt.duplicate else 1)
    return replace(session, done=done), f"Submitted task {receipt.task_id}" + (" (already stored)" if receipt.duplicate else "")


def painting_for(session: Session, painted: str):
    """The painter's JSON read and checked against the task this session holds."""
    count = int(session.topology.removeprefix("points-")) if session.kind != "human_contact" else None
    painting = read_painting(painted, session.labels, session.topology, count)
    if painting.task_id is not None and painting.task_id != session.task_id:
        raise InputError("the painter shows another task than the one you hold; reload the page")
    return painting


PAINTED_TASK = re.compile(r'\s*\{\s*"task"\s*:\s*(\d{1,12})\b')


def synced_to_painting(studio: Studio, session: Session, painted) -> Session:
    """The session at the task the painting is of, when that is the annotator's open assignment and the page's
    state still holds an earlier one (the page moved on through the JSON actions, ``ticket_action``, which
    Gradio's state does not see). Otherwise unchanged: a resent submission of the state's task stays a resend."""
    found = PAINTED_TASK.match(painted) if isinstance(painted, str) else None
    if found is None or int(found.group(1)) == session.task_id:
        return session
    assignment = workflow.open_assignment(studio.store, session.annotator_id)
    if assignment is None or assignment.task.id != int(found.group(1)):
        return session  # painting_for refuses it: the painter shows another task than the one held
    return replace(open_task(session, assignment),
                   seed=seed_info(assignment.task, pre_annotation_source(studio, assignment.task)))


def check_painting(session: Session, painted: str) -> str:
    """The sync event: validate the painting as submit would, and report what the server sees."""
    if session is None or session.task_id is None:
        return ""
    return counts_html(painting_for(session, painted), label_colours(session.labels))


MAX_DONE = 10**6  # the page's count of this session, as it sends it to the JSON actions (only shown)
FLAG_WORDS = {words: stored for words, stored in FLAG_CHOICES}


def ticket_session(studio: Studio, annotator_id: int, task_id: int, browser: str, done) -> Session:
    """The page session a ticket stands for (``studio.painter_api``): its annotator, the assignment of the
    ticket's task and what seeded the painter, re-derived from the store (one read; the task itself is the one
    ``task_view`` handed out, remembered); ``done`` is the page's count."""
    holder = workflow.ticket_holder(studio.store, annotator_id, task_id)
    if holder is None:
        raise InputError("this task is not yours; reload the page")
    task = studio.payloads.task(task_id, studio.store.task)
    count = done if isinstance(done, int) and not isinstance(done, bool) and 0 <= done <= MAX_DONE else 0
    return Session(annotator_id, holder.external_id, browser=browser, demo=holder.demo, done=count,
                   assignment_id=holder.assignment_id, task_id=task_id, kind=task.kind, topology=task.topology,
                   labels=tuple(task.labels), seed=seed_info(task, pre_annotation_source(studio, task)))


def ticket_action(studio: Studio, action: str, annotator_id: int, task_id: int, browser: str, data: dict,
                  request) -> dict:
    """Submit, skip or flag the ticket's task exactly as the page's queued events do, and answer the next task
    as the page shows it (``task_view``; a demo visitor gets the thank-you once its task is done)."""
    state = ticket_session(studio, annotator_id, task_id, browser, data.get("done"))
    if action == "submit":
        state, message = submit_painting(studio, state, data["painting"])
    elif action == "skip":
        workflow.skip(studio.store, annotator_id, task_id)
        message = f"Skipped task {task_id}"
    elif action == "flag":
        choice = str(data.get("reason") or "")[:200]
        stored = workflow.flag_reason(FLAG_WORDS.get(choice, choice), str(data.get("typed") or "")[:2000])
        workflow.flag(studio.store, annotator_id, task_id, stored)
        message = f"Flagged task {task_id} ({html.escape(reason_words(stored))})"
    else:
        raise InputError(f"unknown action {action[:20]!r}")
    state, image, text, progress, payload, message = _advance(studio, state, message, request)
    return {"task": state.task_id, "done": state.done, "payload": payload, "image": image, "text": text,
            "progress": f"<p><strong>{state.done}</strong> done this session</p>", "status": html.escape(message)
            if action != "flag" else message}


# The page's Submit, Skip and Flag go to the JSON actions when the task came with a ticket (studio/painter_api.py):
# the click is taken before Gradio's own handler sees it, the answer is the next task, shown here. Pages without a
# ticket (and gradio_client users) keep the queued events.
ACTIONS_JS = """
if (!window.studioTaskActions) {
  const paths = %s;
  const actions = window.studioTaskActions = { busy: false, done: null };
  const content = (id) => {
    const host = document.getElementById(id);
    return host && (host.querySelector('span.md') || host.querySelector('.html-container .prose')
                    || host.querySelector('.prose'));
  };
  const show = (id, markup) => { const target = content(id); if (target) target.innerHTML = markup; };
  const controls = (on) => {
    for (const selector of ['#submit', '#skip', '#flag', '#flag-reason input', '#flag-typed textarea']) {
      const node = document.querySelector(selector);
      if (node) node.disabled = !on;
    }
  };
  window.addEventListener('click', async (event) => {
    const button = event.target instanceof Element && event.target.closest('#submit, #skip, #flag');
    const painter = window.studioPainter;
    const s = painter && painter.state();
    if (!button || !s || !s.check) return;  // no ticket: Gradio's queued event handles it
    event.preventDefault();
    event.stopImmediatePropagation();
    if (actions.busy || button.disabled) return;
    actions.busy = true;
    controls(false);
    const action = button.id;
    if (actions.done === null) {
      const shown = document.querySelector('#progress strong');
      actions.done = shown ? Number(shown.textContent) || 0 : 0;
    }
    const request = { ticket: s.check.ticket, done: actions.done };
    if (action === 'submit') {
      request.painting = JSON.stringify({ task: s.taskId, topology: s.topology, layers: painter.layers(),
                                          seconds: s.secondsActive });
    } else if (action === 'flag') {
      const reason = document.querySelector('#flag-reason input');
      const typed = document.querySelector('#flag-typed textarea');
      request.reason = reason ? reason.value : '';
      request.typed = typed ? typed.value : '';
    }
    try {
      const response = await fetch(paths[action], { method: 'POST', credentials: 'same-origin',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify(request) });
      const answer = await response.json().catch(() => ({ error: 'the server did not answer; try again' }));
      if (!response.ok) {
        show('status', '');
        const target = content('status');
        if (target) target.textContent = answer.error || 'the request failed; try again';
        controls(true);
        return;
      }
      actions.done = answer.done;
      show('task-image', answer.image);
      show('task-info', answer.text);
      show('progress', answer.progress);
      show('status', answer.status);
      show('server-counts', '');
      const direct = document.getElementById('painter-check-direct');
      if (direct) direct.textContent = '';
      controls(Boolean(answer.payload));
      if (answer.payload) await painter.load(answer.payload);
      else painter.unload();
    } catch (error) {
      const target = content('status');
      if (target) target.textContent = 'the server did not answer; your painting is kept, try again';
      controls(true);
    } finally {
      actions.busy = false;
    }
  }, true);
}
""" % json.dumps(ACTION_PATHS)


def build_annotate(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title="Interaction Studio: annotate") as page:
        gr.Markdown("# Paint the contact\nPaint every body region that touches each listed object. Left-drag paints, "
                    "right-drag turns the body, the wheel zooms. Switch layers for each object; *Part* fills a whole "
                    "body part with one click. The image zooms with the wheel or two fingers (double click resets); "
                    "on a phone, tap it to enlarge it.")
        session = gr.State(None)
        worker = gr.Textbox(visible="hidden", elem_id="worker-id")
        gr.HTML("", js_on_load=IMAGE_JS + ACTIONS_JS, elem_id="task-image-zoom", padding=False)  # no room taken
        with gr.Row(elem_id="task-row"):
            with gr.Column(scale=2, min_width=240):
                _, payload, painted, sync = painter_component()
                server_counts = gr.HTML(elem_id="server-counts")
            with gr.Column(scale=1, min_width=120, elem_id="image-column"):
                image = gr.HTML(elem_id="task-image")  # an <img> of the task's cached image URL (studio.payloads)
                task_text = gr.HTML(elem_id="task-info")
                progress = gr.Markdown(elem_id="progress")
                status = gr.Markdown(elem_id="status")
                submit = gr.Button("Submit", variant="primary", elem_id="submit", interactive=False)
                with gr.Row():
                    skip = gr.Button("Skip", elem_id="skip", interactive=False)
                    reason = gr.Dropdown(FLAG_CHOICES, value=workflow.FLAG_REASONS[0], label="flag reason",
                                         elem_id="flag-reason", interactive=False)
                    flag = gr.Button("Flag", elem_id="flag", interactive=False)
                typed_reason = gr.Textbox("", label="or type the reason (choose 'Something else')", max_length=
                                          workflow.MAX_TYPED_REASON, elem_id="flag-typed", interactive=False)
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
            return _advance(studio, state, "", request)

        @user_errors
        def on_submit(painted_json, state, request: gr.Request):
            state = synced_to_painting(studio, _require(state, request), painted_json)
            state, message = submit_painting(studio, state, painted_json)
            return _advance(studio, state, message, request)

        @user_errors
        def on_skip(state, request: gr.Request):
            state = _require(state, request)
            workflow.skip(studio.store, state.annotator_id, _require_task(state))
            return _advance(studio, state, f"Skipped task {state.task_id}", request)

        @user_errors
        def on_flag(flag_reason, typed, state, request: gr.Request):
            state = _require(state, request)
            stored = workflow.flag_reason(str(flag_reason or ""), str(typed or ""))
            workflow.flag(studio.store, state.annotator_id, _require_task(state), stored)
            return _advance(studio, state, f"Flagged task {state.task_id} ({html.escape(reason_words(stored))})",
                            request)

        @user_errors
        def on_sync(painted_json, state, request: gr.Request):
            return check_painting(_require(state, request) if state is not None else None, painted_json)

        # A new task (or none) comes with the controls' state (no second event per task): the server's check of
        # the previous painting goes, and the task buttons are enabled exactly when there is a task.
        task_outputs = outputs + [server_counts, submit, skip, flag, reason, typed_reason]

        page.load(with_controls(on_start), inputs=[worker], outputs=task_outputs, js=WORKER_JS,
                  api_name="start_session", **lane)
        submit.click(with_controls(on_submit), inputs=[painted, session], outputs=task_outputs, js=READ_JS,
                     api_name="submit", **lane)
        skip.click(with_controls(on_skip), inputs=[session], outputs=task_outputs, api_name="skip", **lane)
        flag.click(with_controls(on_flag), inputs=[reason, typed_reason, session], outputs=task_outputs,
                   api_name="flag", **lane)
        # The check never touches the store, so it has its own lane and never waits behind submits; a stroke
        # that ends while the previous check runs is checked right after it (always_last), never dropped.
        sync.click(on_sync, inputs=[painted, session], outputs=[server_counts], js=READ_JS, api_name="check_painting",
                   concurrency_id=CHECK_LANE, concurrency_limit=studio.settings.store_concurrency,
                   trigger_mode="always_last", show_progress="hidden")
    return page


def with_controls(handler):
    """The handler's six outputs (``task_view``) and the controls for them: the server's check cleared, and
    Submit, Skip, Flag and the flag reasons (chosen and typed) enabled exactly when a task is shown."""
    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        result = handler(*args, **kwargs)
        active = gr.update(interactive=bool(result[4]))
        return (*result, "", active, active, active, active, active)
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


def _advance(studio: Studio, state: Session, message: str, request=None):
    """Show the annotator's open assignment, or claim the next task (None when nothing is left).

    A demo visitor only ever gets the demo task it made, never the crowd queue: once it is done, a thank-you
    and the link back to the demo. A task on a body this server has not installed is never handed out (nobody
    could paint it); an assignment already open on one is shown with Skip and Flag."""
    if state.demo:
        assignment = workflow.open_assignment(studio.store, state.annotator_id)
        if assignment is None:
            return (open_task(state, None), "", demo_thanks(request), f"**{state.done}** done this session", "",
                    message)
    else:
        assignment = workflow.next_task(studio.store, state.annotator_id, bodies=studio.available_bodies())
    return task_view(studio, open_task(state, assignment), assignment, message)


def site_base(request) -> str:
    """``scheme://host[:port]`` as the browser addressed this server ("" without a request)."""
    url = getattr(request, "url", None) if request is not None else None
    return f"{url.scheme}://{url.netloc}" if url is not None and url.netloc else ""


def demo_thanks(request) -> str:
    """What a demo visitor reads after painting their own task: thanks, and an absolute link back to the demo."""
    back = html.escape(site_base(request) + "/", quote=True)
    return ("<div id='demo-thanks'><b>Thank you!</b> Your painting is saved; the lab may use it to improve the "
            f"model. <a id='back-to-demo' href='{back}'>Back to the demo</a></div>")
