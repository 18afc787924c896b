"""A minimal keep-alive HTTP/1.1 client for the load benchmarks (``bench_studies``, ``bench_crowd``).

One ``KeepAliveClient`` is one simulated browser: one connection, its cookies kept and sent back. It sends a
request and reads the status, headers and body (Content-Length or chunked); nothing else. httpx cost this
2-core machine several milliseconds of CPU per response cycle, as much as the server itself, and a load
generator's CPU is taken from the server's cores.
"""
from __future__ import annotations

import asyncio
import json


class KeepAliveClient:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None
        self.cookies: dict[str, str] = {}  # kept and sent back, as a browser does
        self.retries = 0  # requests sent again after the server closed an idle kept-alive connection

    async def request(self, method: str, path: str, body: dict | None = None,
                      headers: dict | None = None) -> tuple[int, bytes]:
        """(status, body). A kept-alive connection the server closed just as it was reused (uvicorn closes idle
        ones after 5 s) is reopened and the request sent once more: only send requests that may be repeated."""
        data = json.dumps(body).encode() if body is not None else b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(data)}"]
        lines += ["Content-Type: application/json"] if body is not None else []
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines += ["Cookie: " + "; ".join(f"{name}={value}" for name, value in self.cookies.items())] \
            if self.cookies else []
        message = ("\r\n".join(lines) + "\r\n\r\n").encode() + data
        reused = self.writer is not None
        try:
            return await self._exchange(message)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if not reused:
                raise
            self.retries += 1
            return await self._exchange(message)

    async def _exchange(self, message: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(message)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("the server closed the connection")
        status, length, chunked, close = int(status_line.split()[1]), 0, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            length = int(value) if name == "content-length" else length
            chunked = chunked or (name == "transfer-encoding" and "chunked" in value)
            close = close or (name == "connection" and value == "close")
            if name == "set-cookie":
                cookie, _, _ = line.decode("latin-1").partition(":")[2].strip().partition(";")
                self.cookies[cookie.split("=", 1)[0]] = cookie.split("=", 1)[1] if "=" in cookie else ""
        payload = await self._chunks() if chunked else await self.reader.readexactly(length)
        if close:
            self.close()
        return status, payload

    async def _chunks(self) -> bytes:
        parts = []
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()
        await self.reader.readline()
        return b"".join(parts)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
