"""A lean HTTP/1.1 client on asyncio streams, for virtual fleets of 100,000 devices.

httpx is the right client for one agent; a fleet in one process needs less:
its connection-pool bookkeeping cost more CPU than the server it measured.
This client keeps a fixed number of keep-alive connections (a semaphore and
a list of idle ones), writes a request, reads the status line, headers and a
``Content-Length`` or chunked body, and hands the connection back. No
pipelining, no HTTP/2, no cookies, no proxies; ``https`` with the default
TLS context. Every read and write is bounded by a timeout, every header
block and chunk line by a length limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

#: Longest status line plus header block accepted.
MAX_HEAD: Final = 64 * 1024
_READ: Final = 256 * 1024

#: Called with each chunk of a streamed body; False stops reading (the connection is dropped).
Sink = Callable[[bytes], Awaitable[bool]]


class HttpError(Exception):
    """The connection failed, timed out, or the answer was not valid HTTP/1.1."""


@dataclass
class Reply:
    """A response; ``headers`` has lower-case names, ``body`` is empty when streamed."""

    status_code: int
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, parts.port or default)


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Pool:
    """At most ``connections`` keep-alive connections to one origin.

    Args:
        base_url: ``http(s)://host[:port]``; request targets are paths, or
            absolute URLs of the same origin.
        connections: most connections open at once; more requests wait.
        timeout: seconds one request may take, from sending to the last byte.
    """

    def __init__(self, base_url: str, *, connections: int, timeout: float) -> None:
        self.origin = Origin.of(base_url)
        self.base_url = f"{self.origin.scheme}://{self.origin.host}:{self.origin.port}"
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max(1, connections))
        self._idle: list[_Conn] = []
        self._host = self.origin.host
        if self.origin.port not in (80, 443):
            self._host += f":{self.origin.port}"

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def path_of(self, target: str) -> str | None:
        """The path of ``target`` on this pool's origin, or None for another origin."""
        if target.startswith("/"):
            return target
        parts = urlsplit(target)
        if Origin.of(target) != self.origin:
            return None
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        sink: Sink | None = None,
    ) -> Reply:
        """Send one request and read its answer (a 2xx body into ``sink`` when given).

        Raises:
            HttpError: connection refused or lost, timeout, malformed answer.
            ValueError: ``target`` is on another origin.
        """
        path = self.path_of(target)
        if path is None:
            raise ValueError(f"{target} is not on {self.origin}")
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            try:
                async with asyncio.timeout(self.timeout):
                    if conn is None:
                        conn = await self._open()
                    reply, reusable = await self._exchange(
                        conn, method, path, headers or {}, body, sink
                    )
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                if conn is not None:
                    conn[1].close()
                raise HttpError(f"{method} {path}: {type(e).__name__}: {e}") from e
            except BaseException:
                if conn is not None:
                    conn[1].close()
                raise
            if reusable:
                self._idle.append(conn)
            else:
                conn[1].close()
            return reply

    async def _open(self) -> _Conn:
        context = ssl.create_default_context() if self.origin.scheme == "https" else None
        return await asyncio.open_connection(
            self.origin.host, self.origin.port, ssl=context, limit=MAX_HEAD
        )

    async def _exchange(
        self,
        conn: _Conn,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        sink: Sink | None,
    ) -> tuple[Reply, bool]:
        reader, writer = conn
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(rest[:3])
        answer: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                answer[name.strip().lower()] = value.strip()
        reusable = answer.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        reply = Reply(status, answer)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return reply, reusable
        if not 200 <= status < 300:
            sink = None  # an error or a redirect: its body is kept, not streamed
        chunks: list[bytes] = []

        async def take(data: bytes) -> bool:
            if sink is not None:
                return await sink(data)
            chunks.append(data)
            return True

        if answer.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # no trailers from our servers
                    break
                data = await reader.readexactly(size)
                await reader.readexactly(2)
                if not await take(data):
                    return reply, False
        elif "content-length" in answer:
            left = int(answer["content-length"])
            while left > 0:
                data = await reader.read(min(left, _READ))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(data)
                if not await take(data):
                    return reply, False
        else:
            reusable = False
            while data := await reader.read(_READ):
                if not await take(data):
                    break
        reply.body = b"".join(chunks)
        return reply, reusable
