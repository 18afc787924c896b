"""The studio's HTTP-level protections, in one ASGI middleware (``SecurityGate``) around every page.

- Client address: the socket's peer, or the ``X-Forwarded-For`` entry left of the trusted proxies when
  the request arrives from a configured proxy (``StudioSettings.trusted_proxies``); handlers see it as
  ``request.client.host``, so throttles and rate limits use the same address.
- Login throttling (``LoginThrottle``): every ``POST <page>/login`` counts failures per user name and
  per client address; from the ``login_max_failures``-th failure on, that key is refused with 429 and
  ``Retry-After`` for ``login_delay_s``, doubling with every further failure (capped at an hour).
- The admin page before login: only its login page (without the endpoint schema), the login route
  and static assets answer; every other ``/admin`` route (config, info, runs, queue, cancel, reset,
  heartbeat, files) answers 401.
- Headers on every response: no framing, no sniffing, same-origin referrers. Cookies are rewritten to
  ``HttpOnly; SameSite=Lax`` (plus ``Secure`` over HTTPS). No CORS headers are ever sent (the parent
  app's CORS middleware allows no origin, which also stops Gradio from adding its own).
- Every browser gets an opaque ``studio-session`` cookie; ``studio.crowd`` binds annotator sessions to it.
- JSON request bodies nested deeper than ``MAX_JSON_DEPTH`` or larger than ``MAX_JSON_BODY`` get 400 /
  413 with a message before any parser sees them (never a RecursionError and a 500).
- Rate limits (``RateLimiter``): sliding windows per client address for session starts and task
  creation, used by the handlers.

Every refusal is logged on the ``studio.security`` logger with the client address (never a password).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

import numpy as np

from engine.errors import InputError

log = logging.getLogger("studio.security")

MAX_LOGIN_BODY = 16 * 1024
MAX_JSON_BODY = 32 * 2**20  # a painting is at most 4 MiB; nothing the pages send comes near this
MAX_JSON_DEPTH = 64  # Gradio payloads nest a few levels; 100k levels would exhaust the parser's stack
SESSION_COOKIE = "studio-session"  # studio.crowd binds annotator page sessions to it
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
MAX_DELAY_S = 3600.0
SECURITY_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)
# What the admin page may serve before login: the login page itself, the login route, static assets.
ADMIN_OPEN_EXACT = ("", "/", "/login", "/login/", "/theme.css", "/favicon.ico", "/manifest.json", "/robots.txt")
ADMIN_OPEN_PREFIXES = ("/assets/", "/static/", "/svelte/")


def client_address(scope, trusted_proxies: tuple[str, ...]) -> str:
    """The client's address: the socket peer, unless the peer is a trusted proxy; then the right-most
    ``X-Forwarded-For`` entry that is not itself a trusted proxy."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not trusted_proxies or not _matches(peer, trusted_proxies):
        return peer
    forwarded = [value.decode("latin-1") for key, value in scope.get("headers", []) if key == b"x-forwarded-for"]
    hops = [hop.strip() for line in forwarded for hop in line.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _valid_ip(hop):
            return peer  # a malformed chain: trust nothing in it
        if not _matches(hop, trusted_proxies):
            return hop
    return peer


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _matches(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0


class LoginThrottle:
    """Failures per key ("user:NAME", "address:IP"); a key at ``max_failures`` or more waits a growing delay."""

    def __init__(self, max_failures: int = 5, delay_s: float = 30.0, clock=time.monotonic):
        self.max_failures, self.delay_s, self.clock = max_failures, delay_s, clock
        self._keys: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def retry_after(self, keys) -> float:
        """Seconds until every key may try again (0 when none is blocked)."""
        now = self.clock()
        with self._lock:
            return max([0.0] + [self._keys[key].blocked_until - now for key in keys if key in self._keys])

    def failed(self, keys) -> float:
        """Count one failure for each key; returns the delay now imposed (0 below the threshold)."""
        now, imposed = self.clock(), 0.0
        with self._lock:
            for key in keys:
                entry = self._keys.setdefault(key, _Failures())
                entry.count += 1
                if entry.count >= self.max_failures:
                    delay = min(self.delay_s * 2.0 ** (entry.count - self.max_failures), MAX_DELAY_S)
                    entry.blocked_until = now + delay
                    imposed = max(imposed, delay)
        return imposed

    def succeeded(self, keys) -> None:
        with self._lock:
            for key in keys:
                self._keys.pop(key, None)


class RateLimiter:
    """At most ``limit`` events per ``window_s`` per key (a sliding window). ``what`` and ``who`` name the
    events and the key in the refusal ("too many {what} from {who}")."""

    def __init__(self, limit: int, window_s: float, what: str, clock=time.monotonic, who: str = "your address"):
        self.limit, self.window_s, self.what, self.who, self.clock = limit, window_s, what, who, clock
        self._events: dict[str, deque] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Count one event for ``key``; ``InputError`` (nothing counted) when the window is full."""
        now = self.clock()
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.window_s:
                events.popleft()
            if len(events) >= self.limit:
                wait = math.ceil(events[0] + self.window_s - now)
                log.warning("rate limit: %s refused for %s (%d in %.0f s)", self.what, key, self.limit, self.window_s)
                raise InputError(f"too many {self.what} from {self.who}; try again in {wait} s")
            events.append(now)
            if len(self._events) > 100_000:  # forget idle keys so the table stays bounded
                for stale in [k for k, v in self._events.items() if not v or v[-1] <= now - self.window_s]:
                    del self._events[stale]


class SecurityGate:
    """The ASGI middleware (see the module doc). ``admin_prefix``: where the admin page is mounted;
    ``admin_user(scope)`` returns the logged-in admin's name or None."""

    def __init__(self, app, *, trusted_proxies: tuple[str, ...], throttle: LoginThrottle, admin_prefix: str | None,
                 admin_user):
        self.app, self.trusted_proxies, self.throttle = app, tuple(trusted_proxies), throttle
        self.admin_prefix, self.admin_user = admin_prefix, admin_user

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        address = client_address(scope, self.trusted_proxies)
        https = scope.get("scheme") == "https" or self._forwarded_https(scope)
        scope = dict(scope, client=(address, (scope.get("client") or ("", 0))[1]))
        new_session = None if _has_cookie(scope, SESSION_COOKIE) else secrets.token_urlsafe(32)
        send = self._with_headers(send, https, new_session)
        path = scope.get("path", "")
        if self.admin_prefix and (path == self.admin_prefix or path.startswith(self.admin_prefix + "/")):
            rest = path[len(self.admin_prefix):]
            if not self._admin_open(rest, scope["method"]) and self.admin_user(scope) is None:
                return await _json(send, 401, {"detail": "Not authenticated"})
        if scope["method"] == "POST" and path.rstrip("/").endswith("/login"):
            return await self._login(scope, receive, send, address)
        if scope["method"] in ("POST", "PUT", "PATCH") and _is_json(scope):
            return await self._json_body(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _json_body(self, scope, receive, send):
        body = await _read_body(receive, MAX_JSON_BODY)
        if body is None:
            return await _json(send, 413, {"detail": f"the request is larger than {MAX_JSON_BODY // 2**20} MiB"})
        if _opening_brackets(body) > MAX_JSON_DEPTH and json_depth(body) > MAX_JSON_DEPTH:
            log.warning("refused a JSON body nested deeper than %d from %s on %s", MAX_JSON_DEPTH,
                        scope["client"][0], scope["path"])
            return await _json(send, 400, {"detail": f"the request is nested deeper than {MAX_JSON_DEPTH} levels"})
        return await self.app(scope, _replay(body, receive), send)

    def _forwarded_https(self, scope) -> bool:
        peer = (scope.get("client") or ("",))[0]
        if not self.trusted_proxies or not _matches(peer, self.trusted_proxies):
            return False
        return any(key == b"x-forwarded-proto" and value.strip().lower() == b"https"
                   for key, value in scope.get("headers", []))

    @staticmethod
    def _admin_open(rest: str, method: str) -> bool:
        if method == "POST":
            return rest in ("/login", "/login/")
        return method in ("GET", "HEAD") and (rest in ADMIN_OPEN_EXACT or rest.startswith(ADMIN_OPEN_PREFIXES))

    async def _login(self, scope, receive, send, address: str):
        body = await _read_body(receive, MAX_LOGIN_BODY)
        if body is None:
            return await _json(send, 413, {"detail": "the login form is too large"})
        username = (parse_qs(body.decode("latin-1")).get("username") or [""])[0].strip()[:128]
        keys = (f"user:{scope['path'].rsplit('/login', 1)[0]}:{username}", f"address:{address}")
        wait = self.throttle.retry_after(keys)
        if wait > 0:
            log.warning("login refused (throttled) for user %r from %s on %s; retry in %.0f s",
                        username, address, scope["path"], wait)
            return await _json(send, 429, {"detail": f"too many failed logins; try again in {math.ceil(wait)} s"},
                               [(b"retry-after", str(math.ceil(wait)).encode())])
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, _replay(body, receive), watch)
        if status.get("code") == 200:
            self.throttle.succeeded(keys)
            log.info("login of %r from %s on %s", username, address, scope["path"])
        elif status.get("code") in (400, 401, 403):
            delay = self.throttle.failed(keys)
            log.warning("failed login for user %r from %s on %s%s", username, address, scope["path"],
                        f"; blocked for {delay:.0f} s" if delay else "")

    @staticmethod
    def _with_headers(send, https: bool, new_session: str | None):
        async def wrapped(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in {name for name, _ in SECURITY_HEADERS}
                           and not k.lower().startswith(b"access-control-")]
                headers = [(k, _cookie(v, https)) if k.lower() == b"set-cookie" else (k, v) for k, v in headers]
                if new_session is not None:
                    headers.append((b"set-cookie", _cookie(f"{SESSION_COOKIE}={new_session}; Path=/".encode(), https)))
                message = dict(message, headers=headers + list(SECURITY_HEADERS))
            await send(message)
        return wrapped


def json_depth(body: bytes) -> int:
    """How deeply a JSON text nests arrays and objects (brackets inside strings do not count)."""
    stripped = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    if stripped.size == 0:
        return 0
    steps = np.isin(stripped, (ord("["), ord("{"))).astype(np.int64) - np.isin(stripped, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def _opening_brackets(body: bytes) -> int:
    """'[' and '{' anywhere in the body: a cheap upper bound of ``json_depth`` (most bodies need no more)."""
    return body.count(b"[") + body.count(b"{")


def _is_json(scope) -> bool:
    return any(key == b"content-type" and b"json" in value.lower() for key, value in scope.get("headers", []))


def _has_cookie(scope, name: str) -> bool:
    prefix = name.encode() + b"="
    return any(key == b"cookie" and any(item.strip().startswith(prefix) for item in value.split(b";"))
               for key, value in scope.get("headers", []))


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes ``limit`` bytes."""
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            return None
    return body


def _replay(body: bytes, receive):
    """A ``receive`` that hands the app the body read already, then the client's own messages (disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return replayed


def _cookie(value: bytes, https: bool) -> bytes:
    """One Set-Cookie value with ``HttpOnly; SameSite=Lax`` and ``Secure`` only over HTTPS."""
    cookie = SimpleCookie()
    cookie.load(value.decode("latin-1"))
    for morsel in cookie.values():
        morsel["httponly"], morsel["samesite"], morsel["secure"] = True, "Lax", https
    return cookie.output(header="").strip().encode("latin-1")


async def _json(send, status: int, content: dict, extra=()) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})
