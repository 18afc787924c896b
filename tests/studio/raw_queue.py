"""Gradio's queue protocol spoken by hand (httpx), as an attacker's script would: no ``gradio_client``.

    POST {page}/gradio_api/queue/join   {"data": [...], "fn_index": N, "session_hash": H, ...} -> {"event_id"}
    GET  {page}/gradio_api/queue/data?session_hash=H   server-sent events, ending in "process_completed"
    POST {page}/gradio_api/upload                      multipart "files" -> [server paths]
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import httpx

FILE_META = {"_type": "gradio.FileData"}


@dataclass
class Outcome:
    """What one queued event ended with: ``success``, the outputs' data, and the error text shown."""

    success: bool
    data: list | None
    error: str | None
    raw: dict

    def __repr__(self) -> str:
        return f"Outcome(success={self.success}, error={self.error!r})"


def event_end(line: str, event_id: str) -> Outcome | None:
    """How this event ended, read from one line of the event stream; None while it has not ended."""
    if not line.startswith("data:"):
        return None
    message = json.loads(line[5:])
    if message.get("event_id") not in (None, event_id):
        return None
    if message.get("msg") == "process_completed":
        output = message.get("output") or {}
        return Outcome(bool(message.get("success")), output.get("data"), output.get("error"), message)
    if message.get("msg") == "unexpected_error":
        return Outcome(False, None, message.get("message"), message)
    return None


def painter_payload(outcome: Outcome) -> dict | None:
    """The painter payload (task id, mesh URL, labels) among an annotator page's outputs, if any."""
    for item in outcome.data or []:
        if isinstance(item, str) and item.startswith("{") and '"mesh_url"' in item:
            return json.loads(item)
    return None


def forged(path) -> dict:
    """A file object naming a server path, as the browser sends an uploaded one."""
    return {"path": str(path), "meta": FILE_META, "orig_name": Path(path).name}


class RawPage:
    """One mounted page (``/``, ``/annotate``, ``/admin``) over one httpx client (cookies kept)."""

    def __init__(self, base_url: str, page: str = "", client: httpx.Client | None = None, headers=None):
        self.page = base_url.rstrip("/") + page.rstrip("/")
        self.client = client or httpx.Client(timeout=60, headers=headers or {})
        self.session_hash = secrets.token_hex(6)

    def close(self) -> None:
        self.client.close()

    def visit(self) -> httpx.Response:
        """Load the page as a browser does (this is where the studio's session cookie is set)."""
        response = self.client.get(f"{self.page}/")
        response.raise_for_status()
        return response

    def login(self, username: str, password: str) -> httpx.Response:
        return self.client.post(f"{self.page}/login", data={"username": username, "password": password})

    def config(self) -> dict:
        response = self.client.get(f"{self.page}/config")
        response.raise_for_status()
        return response.json()

    def fn_index(self, api_name: str) -> int:
        for index, dependency in enumerate(self.config()["dependencies"]):
            if dependency.get("api_name") == api_name:
                return dependency.get("id", index)
        raise KeyError(api_name)

    def upload(self, path, name: str | None = None) -> dict:
        """Upload a file the honest way; returns the file object the page then sends."""
        with Path(path).open("rb") as handle:  # streamed: a large upload never sits in this process's memory
            response = self.client.post(f"{self.page}/gradio_api/upload",
                                        files=[("files", (name or Path(path).name, handle))])
        response.raise_for_status()
        server_path = response.json()[0]
        return {"path": server_path, "meta": FILE_META, "orig_name": name or Path(path).name,
                "size": Path(path).stat().st_size}

    def call(self, fn: int | str, data: list, session_hash: str | None = None, timeout_s: float = 120) -> Outcome:
        """Join the queue with ``data`` and read the event stream until this event completes."""
        fn_index = self.fn_index(fn) if isinstance(fn, str) else fn
        session_hash = session_hash or self.session_hash
        joined = self.client.post(f"{self.page}/gradio_api/queue/join",
                                  json={"data": data, "fn_index": fn_index, "session_hash": session_hash,
                                        "event_data": None, "trigger_id": None})
        if joined.status_code != 200:
            return Outcome(False, None, f"HTTP {joined.status_code}: {joined.text[:300]}", {})
        event_id = joined.json()["event_id"]
        with self.client.stream("GET", f"{self.page}/gradio_api/queue/data",
                                params={"session_hash": session_hash}, timeout=timeout_s) as stream:
            for line in stream.iter_lines():
                if (outcome := event_end(line, event_id)) is not None:
                    return outcome
        raise AssertionError(f"the stream ended without completing event {event_id}")
