"""A fault-injecting TCP proxy for the hostile-network tests.

Sits between agents and the server and, for a share of the connections,
breaks the server's answers in one of the ways real networks, middleboxes
and flaky links do. Every decision comes from one seeded RNG, drawn once per request (agents
keep connections alive, so a per-connection choice would hit few answers),
so a failing seed replays the same faults (timing and thread interleaving
aside).

Faults (on the server-to-device direction, where the device must defend
itself; the device's requests travel intact):

- ``drop``: the connection is closed before anything is forwarded;
- ``stall``: forwarding stops for longer than the agent's request timeout;
- ``trickle``: the answer arrives in tiny pieces with pauses;
- ``truncate``: the connection is closed after a random number of bytes;
- ``flip``: one to three bits of the answer are flipped;
- ``reset``: the connection is reset (RST) after a random number of bytes;
- ``content-length``: the first answer's ``Content-Length`` is rewritten to
  a wrong value (larger or smaller).
"""

from __future__ import annotations

import collections
import contextlib
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

FAULTS = ("drop", "stall", "trickle", "truncate", "flip", "reset", "content-length")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r$")
_REQUEST_LINE = re.compile(rb"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (\S+) HTTP/1\.[01]\r\n")


@dataclass
class FaultPlan:
    """What happens to one connection: a fault (or none) and where it strikes."""

    fault: str | None
    at: int = 0  # byte offset in the downstream stream where it strikes
    bits: list[tuple[int, int]] = field(default_factory=list)  # (offset, bit) for flips
    stall: float = 0.0
    length_delta: int = 0


class _Connection:
    """One proxied connection: the plan for the answer in flight and how far it got."""

    def __init__(self) -> None:
        self.plan = FaultPlan(None)
        self.sent = 0
        self.pending = b""
        self.rewrite_header = False

    def next(self, plan: FaultPlan) -> None:
        self.plan, self.sent, self.pending = plan, 0, b""
        self.rewrite_header = plan.fault == "content-length"


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream_port``, injecting faults.

    Args:
        upstream_port: the server's port.
        seed: seeds the RNG that picks every fault.
        fault_rate: share of answers that get a fault.
        stall_seconds: how long a stall lasts (longer than the agent's request timeout).
        max_offset: faults strike within the first ``max_offset`` bytes of an answer
            (half of them within its first 2 KiB: headers and small JSON bodies).
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        seed: int,
        fault_rate: float = 0.3,
        stall_seconds: float = 2.5,
        max_offset: int = 400_000,
    ) -> None:
        self.upstream_port = upstream_port
        self.seed = seed
        self.fault_rate = fault_rate
        self.stall_seconds = stall_seconds
        self.max_offset = max_offset
        self.injected: collections.Counter[str] = collections.Counter()
        #: Every fault injected, with the request whose answer it struck ("GET /path").
        self.faulted: list[tuple[str, str]] = []
        self.connections = 0
        self.requests = 0
        self.enabled = True
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closing = False
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, name=f"faultproxy-{seed}", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _plan(self, request: str = "") -> FaultPlan:
        with self._lock:
            rng = self._rng
            self.requests += 1
            if not self.enabled or rng.random() >= self.fault_rate:
                return FaultPlan(None)
            fault = rng.choice(FAULTS)

            def offset() -> int:
                return rng.randrange(0, 2048 if rng.random() < 0.5 else self.max_offset)

            plan = FaultPlan(fault, at=offset())
            if fault == "flip":
                plan.bits = sorted((offset(), rng.randrange(8)) for _ in range(rng.randint(1, 3)))
            elif fault == "stall":
                plan.stall = self.stall_seconds
            elif fault == "content-length":
                plan.length_delta = rng.choice([-1, 1]) * rng.randint(1, 5000)
            self.injected[fault] += 1
            self.faulted.append((fault, request))
            return plan

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30)
        except OSError:
            client.close()
            return
        with self._lock:
            self.connections += 1
            self._sockets.update((client, upstream))
        connection = _Connection()
        threading.Thread(
            target=self._pump_up, args=(client, upstream, connection), daemon=True
        ).start()
        try:
            self._pump_down(upstream, client, connection)
        finally:
            self._close(client, upstream, reset=connection.plan.fault == "reset")

    def _pump_up(
        self, client: socket.socket, upstream: socket.socket, connection: _Connection
    ) -> None:
        try:
            while data := client.recv(65536):
                if request := _REQUEST_LINE.match(data):
                    # A new request: its answer gets a fresh plan (set before the
                    # server can answer, so the downstream pump sees it in time).
                    method, target = request.group(1, 2)
                    connection.next(self._plan(f"{method.decode()} {target.decode('latin-1')}"))
                upstream.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _pump_down(
        self, upstream: socket.socket, client: socket.socket, connection: _Connection
    ) -> None:
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    if connection.pending:
                        client.sendall(connection.pending)
                    return
                if not self._forward(client, connection, data):
                    return
        except OSError:
            return

    def _forward(self, client: socket.socket, connection: _Connection, data: bytes) -> bool:
        """Send one received block with the current plan; False: the connection must end."""
        plan = connection.plan
        if plan.fault == "drop":
            return False
        if connection.rewrite_header:
            connection.pending += data
            if connection.pending.find(b"\r\n\r\n") < 0 and len(connection.pending) < 65536:
                return True
            data = self._rewrite_length(connection.pending, plan)
            connection.pending, connection.rewrite_header = b"", False
        sent = connection.sent
        if plan.fault == "flip":
            data = self._flip(data, sent, plan)
        if plan.fault in ("truncate", "reset") and sent + len(data) > plan.at:
            client.sendall(data[: plan.at - sent])
            return False
        if plan.fault == "stall" and sent + len(data) > plan.at:
            cut = plan.at - sent
            client.sendall(data[:cut])
            time.sleep(plan.stall)
            client.sendall(data[cut:])
            plan.fault = None
        elif plan.fault == "trickle" and sent < plan.at:
            self._trickle(client, data)
        else:
            client.sendall(data)
        connection.sent += len(data)
        return True

    @staticmethod
    def _trickle(client: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            piece = min(len(view), 1 + len(view) % 997, 1024)
            client.sendall(view[:piece])
            view = view[piece:]
            time.sleep(0.001)

    @staticmethod
    def _flip(data: bytes, sent: int, plan: FaultPlan) -> bytes:
        hits = [(o - sent, b) for o, b in plan.bits if sent <= o < sent + len(data)]
        if not hits:
            return data
        out = bytearray(data)
        for offset, bit in hits:
            out[offset] ^= 1 << bit
        return bytes(out)

    @staticmethod
    def _rewrite_length(data: bytes, plan: FaultPlan) -> bytes:
        end = data.find(b"\r\n\r\n")
        head, rest = (data, b"") if end < 0 else (data[: end + 4], data[end + 4 :])

        def wrong(match: re.Match[bytes]) -> bytes:
            value = max(0, int(match.group(1)) + plan.length_delta)
            return b"content-length: " + str(value).encode() + b"\r"

        return _CONTENT_LENGTH.sub(wrong, head, count=1) + rest

    def _close(self, client: socket.socket, upstream: socket.socket, *, reset: bool) -> None:
        if reset:
            with contextlib.suppress(OSError):
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for sock in (client, upstream):
            if not reset:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with self._lock:
            self._sockets.discard(client)
            self._sockets.discard(upstream)

    def close(self) -> None:
        self._closing = True
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
