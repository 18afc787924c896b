"""``/study/<slug>``: the participant page of a perceptual A/B study, as plain FastAPI routes and one HTML page.

Role: participant (anyone holding a link; signed links when the study wants them). Routes:

    GET  /study/<slug>                          the page (studio/web/study.html + study.js)
    POST /study/<slug>/api/join                 {pid, session, sig, consent} -> token and texts, or "needs consent"
    GET  /study/<slug>/api/trial                (X-Study-Token) -> the current trial, or the completion code
    POST /study/<slug>/api/respond              (X-Study-Token) {trial, choice, likert_left, likert_right,
                                                client_seconds} -> receipt and the next trial
    GET  /study/<slug>/stimulus/<key>/<slot>    a trial's left / right / reference file (opaque per-trial URL)

A participant never sees a method's name, an item's name or source, or which side holds which method: the
page knows trials only by random keys, and the stimulus URLs name the side as shown, not the method.
Errors are JSON ``{"error": message}`` in words (never paths or exception names).
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

import anyio
import anyio.to_thread
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from annotations import studies
from annotations.domain import TrialView
from engine.errors import InputError
from studio.context import Studio
from studio.security import RateLimiter

WEB = Path(__file__).resolve().parent / "web"
JSM = WEB / "node_modules" / "three" / "examples" / "jsm"
ADDONS = ("loaders/GLTFLoader.js", "controls/OrbitControls.js", "utils/BufferGeometryUtils.js",
          "utils/SkeletonUtils.js")
NO_STORE = {"Cache-Control": "no-store"}
STIMULUS_CACHE = {"Cache-Control": "private, max-age=86400, immutable"}
MAX_BODY_BYTES = 4096
ADMISSIONS = 2  # joins and trial fetches at once (each holds the store's write lock briefly)
FILES_IN_MEMORY = 64 * 2**20  # bytes of image / GLB stimuli kept in memory
MAX_FILE_IN_MEMORY = 4 * 2**20
JOINS_PER_MINUTE = 120  # per client address: a lab behind one NAT still fits, a script creating people does not


def add_study_routes(app: FastAPI, studio: Studio) -> None:
    """Every participant route of every study (one call from ``studio.server.build_server``)."""
    app.add_api_route("/study/static/study.js", _static(WEB / "study.js", "text/javascript"), methods=["GET"])
    app.add_api_route("/study/static/jsm/{folder}/{name}", _addon, methods=["GET"])
    app.add_api_route("/study/{slug}", _static(WEB / "study.html", "text/html"), methods=["GET"])
    app.add_api_route("/study/{slug}/", _static(WEB / "study.html", "text/html"), methods=["GET"])
    store = studio.store
    files = _FileBytes(FILES_IN_MEMORY)
    joins = RateLimiter(JOINS_PER_MINUTE, 60.0, "study sign-ups")

    admission = _Admission()

    @app.post("/study/{slug}/api/join")
    async def join(slug: str, request: Request) -> JSONResponse:
        body = await _json_body(request)
        if body.get("consent") is True:
            try:
                joins.check(request.client.host if request.client else "unknown")
            except InputError as error:
                return _error(429, error)
        return await admission.run(lambda: join_payload(store, slug, body))

    @app.get("/study/{slug}/api/trial")
    async def trial(slug: str, x_study_token: str = Header("")) -> JSONResponse:
        return await admission.run(lambda: trial_payload(store, slug, x_study_token))

    @app.post("/study/{slug}/api/respond")
    async def respond(slug: str, request: Request, x_study_token: str = Header("")) -> JSONResponse:
        body = await _json_body(request)
        return await _run_blocking(lambda: respond_payload(store, slug, x_study_token, body))

    @app.get("/study/{slug}/stimulus/{key}/{slot}")
    async def stimulus(slug: str, key: str, slot: str) -> FileResponse:
        """A trial's file: from memory for every trial this server handed out (no thread hop, no database
        read), else one read in the thread pool. A trial's files never change, so browsers may keep them."""
        try:
            found = studies.cached_stimulus_file(store, slug, key, slot) or \
                await run_in_threadpool(studies.stimulus_file, store, slug, key, slot)
        except InputError as error:
            raise HTTPException(404, str(error)) from None
        if found.media == "video" or found.num_bytes > MAX_FILE_IN_MEMORY:  # videos: range requests, from disk
            return FileResponse(found.path, media_type=found.content_type, headers=STIMULUS_CACHE)
        data = files.get(found.path) or files.put(found.path, await run_in_threadpool(found.path.read_bytes))
        return Response(data, media_type=found.content_type, headers=STIMULUS_CACHE)


class _Admission:
    """Joins and trial fetches (they write under the store's single write lock) run at most ``ADMISSIONS`` at a
    time on their own thread-pool tokens: a burst of people arriving queues here, not in front of the answers
    of those already answering (``respond`` keeps the shared pool and meets at most this many at the lock)."""

    def __init__(self):
        self._limiter: anyio.CapacityLimiter | None = None  # made inside the event loop, on first use

    async def run(self, call) -> JSONResponse:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(ADMISSIONS)
        return await anyio.to_thread.run_sync(_answer, call, limiter=self._limiter)


class _FileBytes:
    """Stimulus files' bytes by path, up to ``budget`` bytes in all (least recently used leave first). Stored
    files are named by their SHA-256, so a path's bytes never change."""

    def __init__(self, budget: int):
        self.budget, self._entries, self._size, self._lock = budget, OrderedDict(), 0, threading.Lock()

    def get(self, path: Path) -> bytes | None:
        with self._lock:
            data = self._entries.get(path)
            if data is not None:
                self._entries.move_to_end(path)
            return data

    def put(self, path: Path, data: bytes) -> bytes:
        with self._lock:
            if path not in self._entries:
                self._entries[path], self._size = data, self._size + len(data)
            while self._size > self.budget:
                self._size -= len(self._entries.popitem(last=False)[1])
        return data


async def _run_blocking(call) -> JSONResponse:
    return await run_in_threadpool(_answer, call)


def join_payload(store, slug: str, body: dict) -> dict:
    pid, session, signature = body.get("pid"), body.get("session") or body.get("pid"), body.get("sig")
    if not pid or not isinstance(pid, str) or not isinstance(session, str):
        raise InputError("open this page with the link you were given (it carries your participant id)")
    person = studies.join(store, slug, pid, session, signature if isinstance(signature, str) else None,
                          create=body.get("consent") is True)
    texts = study_texts(studies.study_facts(store, slug))
    if person is None:
        return {"needs_consent": True, **texts}
    return {"token": person.token, "answered": person.num_answered, "total": person.num_trials, **texts}


def study_texts(study) -> dict:
    """What the page shows around the trials (``study``: a Study or StudyFacts): never the methods' names."""
    config = study.config
    return {"title": study.title, "question": config.question, "consent": config.consent,
            "instructions": config.instructions, "likert": config.likert, "likert_question": config.likert_question,
            "time_limit_s": config.time_limit_s}


def trial_payload(store, slug: str, token: str) -> dict:
    view = studies.current_trial(store, slug, token)
    return {"trial": trial_json(slug, view)} if view is not None else {"done": True, **completion(store, slug)}


def trial_json(slug: str, view: TrialView) -> dict:
    base = f"/study/{slug}/stimulus/{view.key}"
    return {"key": view.key, "position": view.position, "total": view.total, "media": view.media,
            "left": f"{base}/left", "right": f"{base}/right",
            "reference": f"{base}/reference" if view.has_reference else None}


def completion(store, slug: str) -> dict:
    config = studies.study_facts(store, slug).config
    return {"completion_code": config.completion_code, "redirect_url": config.redirect_url}


def respond_payload(store, slug: str, token: str, body: dict) -> dict:
    likert = {side: body.get(f"likert_{side}") for side in ("left", "right")}
    receipt = studies.respond(store, slug, token, body.get("trial"), body.get("choice"),
                              likert_left=likert["left"], likert_right=likert["right"],
                              client_seconds=body.get("client_seconds"))
    answer = {"receipt": {"choice": receipt.choice, "duplicate": receipt.duplicate, "completed": receipt.completed,
                          "seconds": round(receipt.seconds, 3)}}
    following = {"trial": trial_json(slug, receipt.next_trial)} if receipt.next_trial else \
        {"done": True, **completion(store, slug)}
    return {**answer, **following}


def _answer(call) -> JSONResponse:
    """Run a handler: its result as JSON, or the user's error in words with a fitting status."""
    try:
        return JSONResponse(call(), headers=NO_STORE)
    except studies.UnknownStudyError as error:
        return _error(404, error)
    except studies.StudyStateError as error:
        return _error(409, error)
    except studies.TrialError as error:
        return _error(403, error)
    except InputError as error:
        return _error(400, error)


def _error(status: int, error: Exception) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=status, headers=NO_STORE)


async def _json_body(request: Request) -> dict:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise HTTPException(413, "the request is too large")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise HTTPException(400, "the request must be JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the request must be a JSON object")
    return body


def _static(path: Path, media_type: str):
    def serve() -> FileResponse:
        if not path.is_file():
            raise HTTPException(404, f"{path.name} is missing from the installation")
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})
    return serve


def _addon(folder: str, name: str) -> FileResponse:
    """Only the three.js add-ons the GLB viewer needs (never node_modules at large)."""
    relative = f"{folder}/{name}"
    if relative not in ADDONS:
        raise HTTPException(404, "not found")
    return _static(JSM / relative, "text/javascript")()
