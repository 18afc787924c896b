"""The one ``Studio`` per process (engine, store, bodies) and the glue every page shares.

Handlers stay thin: they parse input, call the engine or the store, and format the output. Errors a
user can fix (``InputError``, ``MissingAssetError``) become ``gr.Error`` toasts with escaped text;
anything else is a bug and propagates so Gradio logs it (the server keeps serving).
"""
from __future__ import annotations

import functools
import html
import logging
import re
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np

from annotations.runs import prune_runs
from annotations.store import Store
from engine.errors import InputError, MissingAssetError
from studio.payloads import TaskPayloads
from studio.resources import PixelBudget, Sweeper
from studio.security import LoginThrottle, RateLimiter
from studio.settings import StudioSettings

log = logging.getLogger("studio")
GPU_LANE = "gpu"  # the concurrency_id every GPU-bound event shares
STORE_LANE = "store"
MAX_REMEMBERED_SESSIONS = 200_000
BODY_CHECK_S = 30.0  # how often the installed bodies are looked for again
TOPOLOGY_BODIES = {"openbody-v1": "openbody", "smplh-6890": "smplh", "smplx-10475": "smplx", "smpl-6890": "smpl"}


_SERVER_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\"/:,;()<>]+/)+([^\s'\"/:,;()<>]*)")


def public_message(error: Exception) -> str:
    """What a visitor may read: the message in words, with no server path (a path becomes its file name).

    A missing model file is named by what it is, not where the server looks for it; the full message
    goes to the server log (and ``python app.py doctor`` shows the paths)."""
    if isinstance(error, MissingAssetError):
        log.warning("%s", error)
        return f"{error.what} is not installed on this server; the administrator can run `python app.py doctor`"
    return _SERVER_PATH.sub(lambda match: match.group(1) or "a server folder", str(error))


def user_errors(handler):
    """Turn the engine's and the store's user-facing errors into escaped ``gr.Error`` messages in words
    (``public_message``: no server paths). Anything else is a bug: Gradio logs it and the visitor sees only
    that the request failed (the pages are mounted with ``show_error=False``)."""
    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except (InputError, MissingAssetError) as error:
            raise gr.Error(html.escape(public_message(error)), print_exception=False) from None
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
        self._sessions: dict[str, set[int]] = {}  # browser session digest -> annotator ids (studio.crowd)
        self.pixel_budgets = {lane: PixelBudget(settings.pixel_budget, settings.pixel_wait_s, lane)
                              for lane in (GPU_LANE, STORE_LANE)}
        self._sweeper: Sweeper | None = None
        self._available: tuple[float, frozenset[str]] | None = None  # (monotonic time, installed bodies)
        self.payloads = TaskPayloads(self._pre_annotation, self.body_mesh_json)  # studio.payloads
        from studio.painter_api import ticket_key  # (it imports this module)

        self.painter_ticket_key = ticket_key(settings.worker_secret)  # studio.painter_api

    def _pre_annotation(self, task) -> dict:
        from studio.annotate import pre_annotation

        return pre_annotation(self, task)[0]

    def start_sweeper(self) -> None:
        """Sweep old uploads, cached and output files on a background thread (``studio.resources``)."""
        from gradio.utils import get_upload_folder

        if self._sweeper is None:
            settings = self.settings
            self._sweeper = Sweeper(lambda: [Path(get_upload_folder()), self.outputs, self.admin_files],
                                    settings.cache_max_age_s, settings.cache_max_bytes, settings.sweep_every_s,
                                    after_sweep=self.prune_runs).start()

    def prune_runs(self) -> None:
        """Keep the tabs' runs within ``settings.runs_max_bytes``, oldest deleted first (logged)."""
        deleted, kept = prune_runs(self.store, self.settings.runs_max_bytes)
        if deleted:
            log.info("pruned %d old runs; %d bytes kept", deleted, kept)

    def stop_sweeper(self) -> None:
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None

    def remember_session(self, digest: str, annotator_id: int) -> None:
        """This browser session (cookie digest) acts for this annotator (the task mesh route asks)."""
        with self._lock:
            if len(self._sessions) >= MAX_REMEMBERED_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))  # the oldest goes first
            self._sessions.setdefault(digest, set()).add(annotator_id)

    def session_annotators(self, digest: str | None) -> frozenset[int]:
        with self._lock:
            return frozenset(self._sessions.get(digest, ())) if digest else frozenset()

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

    def available_bodies(self) -> frozenset[str]:
        """The body topologies this server can show (their files installed), re-checked every
        ``BODY_CHECK_S``: ``next_task`` never hands out a task on any other body."""
        now = time.monotonic()
        if self._available is None or now - self._available[0] > BODY_CHECK_S:
            ready = []
            for topology in TOPOLOGY_BODIES:
                try:
                    self.body(topology)
                except (MissingAssetError, InputError):  # not installed, or its file does not load
                    continue
                ready.append(topology)
            self._available = (now, frozenset(ready))
        return self._available[1]

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
