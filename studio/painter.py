"""The 3D painter as a Gradio component: ``gr.HTML`` that mounts ``studio/web/painter.js`` (three.js from npm).

Python talks to the painter through two hidden textboxes:
- ``payload`` (Python -> browser): JSON with the mesh URL, labels, colours, and the starting layers and
  prediction (inline, or an ``annotation_url`` the painter fetches: ``studio.payloads``). Its change event
  hands it to ``painter.load``.
- ``painted`` (browser -> Python): events that need the painting read it in their ``js`` step from
  ``window.studioPainter``; the handler parses and validates it (``read_painting``) before anything
  is stored.
After every stroke the painter clicks the hidden ``painter-sync`` button, whose event checks the
painting on the server and reports per-label counts (the paint -> server round trip).
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import gradio as gr
import numpy as np

from annotations.errors import PayloadError
from annotations.workflow import check_ids
from engine.body.topology import num_vertices
from studio.exports import CONTACT_THRESHOLD, label_colours

MAX_PAINTING_BYTES = 4 * 2**20
STATIC_URL = "/studio/static"

MOUNT_JS = f"""
const box = element.querySelector('.studio-painter');
window.studioPainterReady = import('{STATIC_URL}/painter.js').then((module) => {{
  const painter = module.createPainter(box);
  // After every stroke the server checks the painting: straight to the JSON endpoint when the task came with a
  // ticket (studio/painter_api.py; one request in flight, the latest painting sent when it returns), else
  // through the hidden sync button's queued event.
  let inFlight = false, again = false;
  const checkDirect = async () => {{
    if (inFlight) {{ again = true; return; }}
    inFlight = true;
    try {{
      do {{
        again = false;
        const s = painter.state();
        if (!s.check) break;
        const painting = JSON.stringify({{task: s.taskId, topology: s.topology, layers: painter.layers(),
                                         seconds: s.secondsActive}});
        const response = await fetch(s.check.url, {{method: 'POST', credentials: 'same-origin',
          headers: {{'content-type': 'application/json'}}, body: JSON.stringify({{ticket: s.check.ticket, painting}})}});
        const answer = await response.json().catch(() => ({{error: 'the server check failed'}}));
        if (painter.state().taskId !== s.taskId) continue;  // another task by now: this answer is stale
        const target = document.getElementById('painter-check-direct');
        if (!target) break;
        if (response.ok) target.innerHTML = answer.html;
        else target.textContent = answer.error || 'the server check failed';
      }} while (again);
    }} catch (error) {{
      const target = document.getElementById('painter-check-direct');
      if (target) target.textContent = 'the server check failed; your painting is kept';
    }} finally {{
      inFlight = false;
    }}
  }};
  box.addEventListener('painter-change', () => {{
    if (painter.state().check) {{ checkDirect(); return; }}
    const sync = document.querySelector('#painter-sync button') || document.getElementById('painter-sync');
    if (sync) sync.click();
  }});
  return painter;
}});
"""

LOAD_JS = """(payload) => {
  const direct = document.getElementById('painter-check-direct');
  if (direct) direct.textContent = '';  // the previous task's check goes with it
  if (window.studioPainterReady) window.studioPainterReady.then((p) => (payload ? p.load(payload) : p.unload()));
  return [];
}"""

# Replaces the first input (the hidden ``painted`` box) with the painter's current state.
READ_JS = """(...args) => {
  const p = window.studioPainter;
  if (p) {
    const s = p.state();
    args[0] = JSON.stringify({task: s.taskId, topology: s.topology, layers: p.layers(), seconds: s.secondsActive});
  }
  return args;
}"""


@dataclass(frozen=True)
class Painting:
    """What the painter sent, checked against the task: label -> sorted unique vertex (or point) ids (K,) int64."""

    task_id: int | None
    topology: str
    layers: Mapping[str, np.ndarray]
    seconds: float | None

    def counts(self) -> dict[str, int]:
        return {label: int(ids.size) for label, ids in self.layers.items()}


def painter_component() -> tuple[gr.HTML, gr.Textbox, gr.Textbox, gr.Button]:
    """The painter, its two hidden textboxes (payload in, painting out) and the hidden sync button."""
    painter = gr.HTML('<div class="studio-painter" id="studio-painter"></div><div id="painter-check-direct"></div>',
                      js_on_load=MOUNT_JS, elem_id="painter-host", min_height=600)
    payload = gr.Textbox(visible="hidden", elem_id="painter-payload")
    painted = gr.Textbox(visible="hidden", elem_id="painter-painted")
    sync = gr.Button("sync", visible="hidden", elem_id="painter-sync")
    payload.change(None, inputs=[payload], js=LOAD_JS, api_name="painter_load", api_visibility="private")
    return painter, payload, painted, sync


def payload_json(*, mesh_url: str, kind: str, topology: str, task_id: int | None, labels, layers=None,
                 prediction: Mapping[str, np.ndarray] | None = None, view=None, annotation_url: str | None = None,
                 image_url: str | None = None, check: tuple[str, str] | None = None) -> str:
    """The JSON ``painter.load`` takes. ``layers`` default to the prediction thresholded at 0.5. ``view``: an
    optional direction (3,) from the mesh's centre towards the opening camera (default: the front, +Z).

    With ``annotation_url`` (``studio.payloads``) the layers and prediction are not inline: the painter
    fetches them from that cached URL, and the page's event carries only this small JSON. ``check``: (URL,
    ticket) of the stroke check outside the queue (``studio.painter_api``)."""
    head = {"mesh_url": mesh_url, "kind": kind, "topology": topology, "task_id": task_id, "labels": list(labels),
            "colours": label_colours(labels)}
    if view is not None:
        head["view"] = np.round(np.asarray(view, dtype=np.float64), 4).tolist()
    if image_url is not None:
        head["image_url"] = image_url
    if check is not None:
        head["check_url"], head["ticket"] = check
    if annotation_url is not None:
        return json.dumps({**head, "annotation_url": annotation_url})
    prediction = dict(prediction or {})
    if layers is None:
        layers = {label: np.flatnonzero(np.asarray(values) >= CONTACT_THRESHOLD) for label, values in prediction.items()}
    return json.dumps({
        **head, "layers": {label: np.asarray(ids, dtype=np.int64).tolist() for label, ids in layers.items()},
        "prediction": {label: np.round(np.asarray(values, dtype=np.float64), 3).tolist()
                       for label, values in prediction.items()}})


def read_painting(text: str, labels: tuple[str, ...], topology: str, count: int | None = None) -> Painting:
    """Parse the painter's JSON and check every id against the topology; ``PayloadError`` when anything is off."""
    if not isinstance(text, str) or not text:
        raise PayloadError("no painting was received from the painter; reload the page and try again")
    if len(text) > MAX_PAINTING_BYTES:
        raise PayloadError(f"the painting is larger than {MAX_PAINTING_BYTES // 2**20} MiB")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise PayloadError("the painting is not valid JSON") from None
    except RecursionError:
        raise PayloadError("the painting is nested too deeply to be a painting") from None
    if not isinstance(data, dict) or not isinstance(data.get("layers"), dict):
        raise PayloadError("the painting must be an object with a 'layers' mapping")
    if not isinstance(data.get("topology"), str) or not data["topology"]:
        raise PayloadError(f"the painting has no topology; this task uses {topology!r}")
    if data.get("topology") != topology:
        raise PayloadError(f"the painting was made on {str(data.get('topology'))[:40]!r}, but this task uses {topology!r}")
    unknown = sorted(str(label)[:40] for label in data["layers"] if label not in labels)
    if unknown:
        raise PayloadError(f"the painting has unknown layer(s) {unknown}; the layers are {list(labels)}")
    total = count if count is not None else num_vertices(topology)
    layers = {label: check_ids(data["layers"].get(label, []), total, topology, label) for label in labels}
    return Painting(task_id=_optional_int(data.get("task")), topology=topology,
                    layers=MappingProxyType(layers), seconds=_optional_seconds(data.get("seconds")))


def counts_html(painting: Painting, colours: Mapping[str, str]) -> str:
    """A one-line summary of what the server holds, labels escaped."""
    items = [f'<span style="color:{colours.get(label, "#444")}">&#9632;</span> {html.escape(label)}: '
             f'{count} vertices' for label, count in painting.counts().items()]
    return '<div id="painter-server-counts">checked on the server: ' + " &middot; ".join(items) + "</div>"


def _optional_int(value) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_seconds(value) -> float | None:
    """The painter's active seconds: absent is fine, anything but a finite number >= 0 is refused."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value >= 0:
        return float(value)
    raise PayloadError(f"the painting's seconds must be a number of at least 0, got {str(value)[:20]!r}")
