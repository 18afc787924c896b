"""The painter's hot actions as small JSON endpoints, outside Gradio's queue (what a crowd does most).

    POST /studio/api/check   {"ticket": "...", "painting": "<the painter's JSON: task, topology, layers, seconds>"}
                             -> {"task": N, "counts": {label: vertices}, "html": "<div id=painter-server-counts>..."}
    POST /studio/api/submit  {"ticket", "painting", "done"}  -> the next task (``studio.annotate.ticket_action``)
    POST /studio/api/skip    {"ticket", "done"}              -> the next task
    POST /studio/api/flag    {"ticket", "reason", "typed", "done"} -> the next task

The three task actions store exactly what the page's queued Submit / Skip / Flag events store (the same
functions: the submission key derived from the assignment, so a resend is stored once) and answer the next
task as the page shows it: ``{"task", "payload", "image", "text", "progress", "status"}``, the payload with
a new ticket ("" when no task is left). ``done`` is the page's count of this session (shown, never trusted
for anything else).

Why: every stroke of every annotator is checked on the server. With 300 annotators painting a stroke
every few seconds that is the most frequent request of all, and through Gradio's queue each one is a
queued event with its event stream (``benchmarks/bench_crowd.py`` measured the queue's cost per event;
docs/SECURITY.md and the README quote the figures). This endpoint does the same check without the queue.

Who may call: the page hands the painter a *ticket* with each task (``ticket_for``): an HMAC over the
annotator id, the task id, the browser's session-cookie digest and an expiry. The endpoint recomputes it
with the cookie of the request, so a ticket works only in the browser whose page session was given the
task, for that task and annotator, until it expires (``TICKET_TTL_S``); nothing is looked up in the
database. The key is derived from ``StudioSettings.worker_secret`` when one is set (every replica then
accepts every replica's tickets), else drawn at random per process. Same limits as the queued check:
the painting's size (``MAX_PAINTING_BYTES``, refused before parsing), its ids checked against the task's
topology (``read_painting``); and a rate limit per annotator (``CHECKS_PER_MINUTE``). Errors are words
without paths; a bad or foreign ticket is a 403 that says only that. The task actions have the same limits
and their own rate limit per annotator (``ACTIONS_PER_MINUTE``).

Nothing blocking runs on the event loop: the body is read there, everything else (the database, parsing
and checking the painting) in worker threads, at most ``LANE_THREADS`` at a time per lane (checks, task
actions).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from annotations.errors import PayloadError
from engine.errors import InputError, MissingAssetError
from studio.context import public_message
from studio.crowd import session_digest
from studio.exports import label_colours
from studio.painter import MAX_PAINTING_BYTES, counts_html, read_painting
from studio.security import RateLimiter

CHECK_PATH = "/studio/api/check"
ACTION_PATHS = {"submit": "/studio/api/submit", "skip": "/studio/api/skip", "flag": "/studio/api/flag"}
TICKET_TTL_S = 24 * 3600.0
CHECKS_PER_MINUTE = 240  # per annotator: four strokes a second, far above any person's pace
ACTIONS_PER_MINUTE = 240  # submit / skip / flag per annotator: far above a person's pace, as for the check
# Each action is a few milliseconds of Python (one thread at a time under the GIL) around short database waits:
# four threads keep a PostgreSQL round trip overlapped, more only add thread switching. bench_crowd.py's
# saturation on this 2-core machine: SQLite 120 -> 136 submissions/s, PostgreSQL 88 -> 96, from 16 to 4
# (and the event loop's p99 lag 153 -> 21 ms).
LANE_THREADS = 4
log = logging.getLogger("studio.security")


def ticket_key(worker_secret: str | None) -> bytes:
    """The tickets' HMAC key: from the worker secret (the same on every replica), else random per process."""
    if worker_secret:
        return hmac.new(worker_secret.encode(), b"studio painter tickets v1", hashlib.sha256).digest()
    return secrets.token_bytes(32)


def _mac(key: bytes, annotator_id: int, task_id: int, expires: int, browser: str) -> str:
    message = f"{annotator_id}.{task_id}.{expires}.{browser}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def ticket_for(key: bytes, annotator_id: int, task_id: int, browser: str, now: float | None = None) -> str:
    """``annotator.task.expiry.mac``: the painter's pass for checking strokes of this task in this browser."""
    expires = int((time.time() if now is None else now) + TICKET_TTL_S)
    return f"{annotator_id}.{task_id}.{expires}.{_mac(key, annotator_id, task_id, expires, browser)}"


def read_ticket(key: bytes, ticket, browser: str | None, now: float | None = None) -> tuple[int, int]:
    """(annotator id, task id) of a valid ticket for this browser; ``PermissionError`` otherwise."""
    parts = ticket.split(".") if isinstance(ticket, str) and len(ticket) <= 200 else []
    if len(parts) != 4 or not all(part.isdigit() for part in parts[:3]) or browser is None:
        raise PermissionError("this page's ticket is not valid here; reload the page")
    annotator_id, task_id, expires = (int(part) for part in parts[:3])
    if not hmac.compare_digest(parts[3], _mac(key, annotator_id, task_id, expires, browser)):
        raise PermissionError("this page's ticket is not valid here; reload the page")
    if expires < (time.time() if now is None else now):
        raise PermissionError("this page's ticket has expired; reload the page")
    return annotator_id, task_id


def add_painter_api(app: FastAPI, studio) -> None:
    from studio.annotate import ticket_action  # the page's own functions (annotate imports this module)

    key = studio.painter_ticket_key
    limiter = RateLimiter(CHECKS_PER_MINUTE, 60.0, "stroke checks", who="this annotator")
    action_limiter = RateLimiter(ACTIONS_PER_MINUTE, 60.0, "submissions", who="this annotator")
    # Worker threads per lane: the checks never wait behind submissions (their own lane), the task actions share
    # one. Each lane runs at most LANE_THREADS at a time (fewer when store_concurrency says so).
    threads = min(LANE_THREADS, studio.settings.store_concurrency)
    check_lane, action_lane = anyio.CapacityLimiter(threads), anyio.CapacityLimiter(threads)

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def read_request(request: Request, needs_painting: bool, rate: RateLimiter):
        """(data, annotator id, task id) of a JSON request with a valid ticket, or the refusal to send."""
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return refuse(415, "send the request as application/json")
        body = await request.body()
        if len(body) > MAX_PAINTING_BYTES:
            return refuse(413, f"the painting is larger than {MAX_PAINTING_BYTES // 2**20} MiB")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return refuse(400, "the request is not valid JSON")
        if not isinstance(data, dict) or (needs_painting and not isinstance(data.get("painting"), str)):
            return refuse(400, "the request must be an object with a 'ticket'" +
                          (" and a 'painting' (JSON text)" if needs_painting else ""))
        try:
            annotator_id, task_id = read_ticket(key, data.get("ticket"), session_digest(request))
        except PermissionError as error:
            log.warning("painter request refused (%s) from %s", error, request.client.host if request.client else "?")
            return refuse(403, str(error))
        try:
            rate.check(str(annotator_id))
        except InputError as error:
            return refuse(429, str(error))
        return data, annotator_id, task_id

    def check_painting(data: dict, task_id: int) -> JSONResponse:
        shape = studio.store.task_shape(task_id)
        if shape is None:
            return refuse(400, "the painter shows another task than the one you hold; reload the page")
        count = int(shape.topology.removeprefix("points-")) if shape.kind != "human_contact" else None
        try:
            painting = read_painting(data["painting"], shape.labels, shape.topology, count)
        except (PayloadError, InputError) as error:
            return refuse(400, public_message(error))
        if painting.task_id is not None and painting.task_id != task_id:
            return refuse(400, "the painter shows another task than the one you hold; reload the page")
        return JSONResponse({"task": task_id, "counts": painting.counts(),
                             "html": counts_html(painting, label_colours(shape.labels))})

    @app.post(CHECK_PATH)
    async def check(request: Request) -> JSONResponse:
        found = await read_request(request, True, limiter)
        if isinstance(found, JSONResponse):
            return found
        data, _, task_id = found
        return await anyio.to_thread.run_sync(check_painting, data, task_id, limiter=check_lane)

    def act(action: str, request: Request, data: dict, annotator_id: int, task_id: int) -> JSONResponse:
        try:
            return JSONResponse(ticket_action(studio, action, annotator_id, task_id, session_digest(request), data,
                                              request))
        except (InputError, MissingAssetError) as error:
            return refuse(400, public_message(error))

    def action_route(action: str):
        async def route(request: Request) -> JSONResponse:
            found = await read_request(request, action == "submit", action_limiter)
            if isinstance(found, JSONResponse):
                return found
            data, annotator_id, task_id = found
            return await anyio.to_thread.run_sync(act, action, request, data, annotator_id, task_id,
                                                  limiter=action_lane)
        return route

    for action, path in ACTION_PATHS.items():
        app.add_api_route(path, action_route(action), methods=["POST"], include_in_schema=False)
