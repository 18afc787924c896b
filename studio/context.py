"""The one ``Studio`` per process (engine, store, bodies) and the glue every page shares.

Handlers stay thin: they parse input, call the engine or the store, and format the output. Errors a
user can fix (``InputError``, ``MissingAssetError``) become ``gr.Error`` toasts with escaped text;
anything else is a bug and propagates so Gradio logs it (the server keeps serving).
"""
from __future__ import annotations

import functools
import html
import tempfile
import threading
from pathlib import Path

import gradio as gr
import numpy as np

from annotations.store import Store
from engine.errors import InputError, MissingAssetError
from studio.security import LoginThrottle, RateLimiter
from studio.settings import StudioSettings

GPU_LANE = "gpu"  # the concurrency_id every GPU-bound event shares
STORE_LANE = "store"
TOPOLOGY_BODIES = {"openbody-v1": "openbody", "smplh-6890": "smplh", "smplx-10475": "smplx", "smpl-6890": "smpl"}


def user_errors(handler):
    """Turn the engine's and the store's user-facing errors into escaped ``gr.Error`` messages."""
    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except (InputError, MissingAssetError) as error:
            raise gr.Error(html.escape(str(error)), print_exception=False) from None
    return wrapper


class Studio:
    """Shared by every page of one server: the engine, the store, bodies by topology, mesh JSON."""

    def __init__(self, settings: StudioSettings, engine, store: Store):
        self.settings, self.engine, self.store = settings, engine, store
        self.outputs = Path(tempfile.mkdtemp(prefix="studio-outputs-"))
        # The admin page's own Gradio cache: exports land here, and only /admin (behind its login) serves it.
        self.admin_files = Path(tempfile.mkdtemp(prefix="studio-admin-"))
        self.upload_dirs: list[Path] = [self.admin_files]  # besides Gradio's upload folder (studio.uploads)
        self._bodies: dict[str, object] = {}
        self._mesh_json: dict[str, dict] = {}
        self._lock = threading.Lock()
        self.login_throttle = LoginThrottle(settings.login_max_failures, settings.login_delay_s)
        self.session_starts = RateLimiter(settings.session_starts_per_minute, 60.0, "session starts")
        self.task_creations = RateLimiter(settings.tasks_per_minute, 60.0, "tasks made from the demo")
        self.require_signed_workers = settings.require_signed_workers  # the admin's switch (studio.crowd)

    def body(self, topology: str):
        """The body model of a topology id, loaded once (``MissingAssetError`` when its file is absent)."""
        from engine.body import load_body

        if topology not in TOPOLOGY_BODIES:
            raise InputError(f"unknown body topology {topology!r}; known: {', '.join(TOPOLOGY_BODIES)}")
        with self._lock:
            if topology not in self._bodies:
                self._bodies[topology] = load_body(TOPOLOGY_BODIES[topology], self.settings.models_dir)
            return self._bodies[topology]

    def body_mesh_json(self, topology: str) -> dict:
        """What the painter fetches for a body: Vitruvian vertices, faces and parts (cached)."""
        if topology not in self._mesh_json:
            body = self.body(topology)
            vertices = body.vitruvian_vertices().detach().cpu().numpy()
            self._mesh_json[topology] = mesh_json(topology, vertices, np.asarray(body.faces),
                                                  np.asarray(body.part_labels), list(body.part_names))
        return self._mesh_json[topology]

    def warm_up(self) -> tuple[str, ...]:
        """Load every installed body and its painter mesh now, so no visitor pays for it; returns the topologies."""
        ready = []
        for topology in TOPOLOGY_BODIES:
            try:
                self.body_mesh_json(topology)
            except MissingAssetError:
                continue  # that body's licensed file is not installed; the doctor says where it goes
            ready.append(topology)
        return tuple(ready)

    def output_folder(self) -> Path:
        """A fresh folder for one request's downloads (Gradio serves them from its own cache)."""
        return Path(tempfile.mkdtemp(dir=self.outputs))


def mesh_json(topology: str, vertices: np.ndarray, faces: np.ndarray | None, part_labels=None,
              part_names=None) -> dict:
    """The painter's mesh format: flat vertex and face lists, part ids per vertex and part names."""
    return {"topology": topology, "vertices": np.round(np.asarray(vertices, dtype=np.float64), 5).ravel().tolist(),
            "faces": [] if faces is None else np.asarray(faces, dtype=np.int64).ravel().tolist(),
            "part_labels": [] if part_labels is None else np.asarray(part_labels).astype(int).tolist(),
            "part_names": list(part_names or [])}
