"""A task's heavy parts, built once and served as cached, content-addressed static responses.

The annotator page used to push every task through Gradio's event stream: the pre-annotation (one
rounded probability per vertex and label, ~130 KB of JSON) rebuilt per task, and the image copied and
re-encoded into Gradio's cache. Now the page's event carries only a few hundred bytes (URLs, labels,
colours) and the painter fetches the parts itself:

    /studio/payload/body/{topology}/{digest}.json         the body mesh (public, like /studio/mesh/body)
    /studio/payload/task/{task_id}/{digest}.json          starting layers + prediction of a task
    /studio/payload/task/{task_id}/{digest}.{png,jpg,...} the task's image file as it is stored

``digest`` is the SHA-256 of the content (for an image: of its file, which is also its name in the store),
so a URL names one content for ever (``Cache-Control: immutable``) and every replica computes the same
URL for the same task (nothing per process in it). JSON is stored gzip-compressed once and sent as it is to
clients that accept gzip; images are sent as stored (already compressed), never re-encoded.

Who may fetch (docs/SECURITY.md): the body mesh is public. A task's parts go only to a browser session
whose annotator holds or held the task, or to the logged-in admin (the same rule as the task-object route,
``studio.server.add_mesh_routes``); everyone else gets the same 404 as for a wrong digest or an unknown task.
The digest is not the secret: it only makes the URL change when the content does.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from annotations.domain import Task
from studio.exports import CONTACT_THRESHOLD

PAYLOAD_PREFIX = "/studio/payload"
CACHE_BYTES = 256 * 2**20  # compressed bytes kept in memory (a body mesh is ~1 MB, a task's layers ~40 KB)
GZIP_LEVEL = 6
REMEMBERED = 100_000  # (browser, task) holders and tasks kept for the payload route
IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "bmp": "image/bmp"}  # the store's formats


@dataclass(frozen=True)
class Payload:
    """One cached response: its bytes (gzip-compressed when ``gzipped``), media type and content digest."""

    digest: str
    body: bytes
    media_type: str
    gzipped: bool

    def plain(self) -> bytes:
        return gzip.decompress(self.body) if self.gzipped else self.body


def json_payload(value) -> Payload:
    """Compact JSON, compressed once; the digest is of the uncompressed text (what the content is)."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    return Payload(hashlib.sha256(text).hexdigest(), gzip.compress(text, GZIP_LEVEL, mtime=0), "application/json",
                   True)


def annotation_content(prediction: dict[str, np.ndarray]) -> dict:
    """What the painter starts from: ``layers`` (the prediction thresholded at 0.5, vertex ids) and the
    ``prediction`` itself (per-vertex probabilities, 3 decimals) for the heat map."""
    return {"layers": {label: np.flatnonzero(np.asarray(values) >= CONTACT_THRESHOLD).tolist()
                       for label, values in prediction.items()},
            "prediction": {label: np.round(np.asarray(values, dtype=np.float64), 3).tolist()
                           for label, values in prediction.items()}}


class PayloadCache:
    """Built payloads by key, least recently used out past ``max_bytes``; thread-safe. Each is built once
    even when many requests ask at the same time (one lock per key)."""

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, Payload] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._building: dict[tuple, threading.Lock] = {}
        self.builds = 0  # how many payloads were built (the tests count them)

    def get(self, key: tuple, build: Callable[[], Payload]) -> Payload:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
            key_lock = self._building.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                found = self._items.get(key)
            if found is not None:
                return found
            payload = build()
            with self._lock:
                self.builds += 1
                self._building.pop(key, None)
                if len(payload.body) <= self.max_bytes:
                    self._items[key] = payload
                    self._bytes += len(payload.body)
                while self._bytes > self.max_bytes:
                    _, dropped = self._items.popitem(last=False)
                    self._bytes -= len(dropped.body)
            return payload


class TaskPayloads:
    """The URLs of a task's parts and their responses. ``prediction_for(task)`` gives the pre-annotation
    (label -> per-vertex values; ``studio.annotate.pre_annotation``), ``body_json(topology)`` the mesh."""

    def __init__(self, prediction_for: Callable[[Task], dict], body_json: Callable[[str], dict],
                 max_bytes: int = CACHE_BYTES):
        self.prediction_for, self.body_json = prediction_for, body_json
        self.cache = PayloadCache(max_bytes)
        # Fetches repeat per task (starting layers, image, a reload): who was found to hold a task, and the
        # tasks' parts (image, prediction: fixed when the task is made), remembered so that no repeat asks the DB.
        self._holders: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._tasks: OrderedDict[int, Task] = OrderedDict()
        self._lock = threading.Lock()

    def holds(self, browser: str | None, task_id: int) -> bool:
        """Whether this browser session was already found to hold the task (``remember_holder``)."""
        with self._lock:
            return browser is not None and (browser, task_id) in self._holders

    def remember_holder(self, browser: str | None, task_id: int) -> None:
        if not browser:
            return
        with self._lock:
            self._holders[(browser, task_id)] = None
            while len(self._holders) > REMEMBERED:
                self._holders.popitem(last=False)

    def hand_out(self, task: Task, browser: str | None) -> None:
        """This browser session was given the task: its parts are this browser's to fetch, and the task (read
        with the assignment) is remembered for the ticket's actions."""
        self.remember_holder(browser, task.id)
        with self._lock:
            self._remember_task(task)

    def _remember_task(self, task: Task) -> None:
        self._tasks[task.id] = task
        self._tasks.move_to_end(task.id)
        while len(self._tasks) > REMEMBERED:
            self._tasks.popitem(last=False)

    def task(self, task_id: int, load: Callable[[int], Task]) -> Task:
        """The task (its image and prediction never change; nothing else of it is used here), loaded once."""
        with self._lock:
            found = self._tasks.get(task_id)
        if found is None:
            found = load(task_id)
            with self._lock:
                self._remember_task(found)
        return found

    def body(self, topology: str) -> Payload:
        return self.cache.get(("body", topology), lambda: json_payload(self.body_json(topology)))

    def annotation(self, task: Task) -> Payload:
        """Keyed by the task's prediction (or, without one, by topology and labels: the prior's inputs)."""
        key = ("prediction", task.prediction.id) if task.prediction is not None else \
            ("prior", task.kind, task.topology, task.labels)
        return self.cache.get(key, lambda: json_payload(annotation_content(self.prediction_for(task))))

    def body_url(self, topology: str) -> str:
        return f"{PAYLOAD_PREFIX}/body/{topology}/{self.body(topology).digest}.json"

    def annotation_url(self, task: Task) -> str:
        return f"{PAYLOAD_PREFIX}/task/{task.id}/{self.annotation(task).digest}.json"

    @staticmethod
    def image_url(task: Task) -> str:
        return f"{PAYLOAD_PREFIX}/task/{task.id}/{task.image.sha256}.{image_extension(task.image.format)}"

    def image(self, task: Task) -> Payload:
        """The stored image file as it is (its name in the store is its SHA-256)."""
        return self.cache.get(("image", task.image.sha256), lambda: Payload(
            task.image.sha256, task.image.path.read_bytes(), IMAGE_TYPES[image_extension(task.image.format)], False))


def image_extension(image_format: str) -> str:
    extension = str(image_format).lower()
    return extension if extension in IMAGE_TYPES else "png"
