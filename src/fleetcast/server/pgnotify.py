"""Wake-ups across server processes with PostgreSQL ``LISTEN/NOTIFY``.

Every process keeps one asyncpg connection that ``LISTEN``s on
:data:`CHANNEL`. :meth:`PgNotifier.notify` wakes this process's waiting
requests at once and queues the device ids; a background task sends them as
``NOTIFY`` payloads (comma-separated ids, split to stay under PostgreSQL's
8000-byte payload limit), and every other process wakes its own waiters.
Notifications a process sends to itself are ignored (it woke them already).

PostgreSQL delivers a notification to every listening connection, so nothing
is lost while the connection is up. When it drops, the task reconnects with
backoff and then wakes every local waiter, since notifications may have been
missed meanwhile; the ``/next`` re-check bounds the delay in any case.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Final

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from fleetcast.server.notify import Listener, LocalNotifier, Subscription

log = logging.getLogger(__name__)

CHANNEL: Final = "fleetcast_wake"
#: PostgreSQL refuses payloads of 8000 bytes or more.
MAX_PAYLOAD: Final = 7900
_RETRY_DELAYS: Final = (0.5, 1.0, 2.0, 5.0)


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """The plain ``postgresql://`` DSN asyncpg accepts, from a SQLAlchemy URL."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def payloads(device_ids: Iterable[str]) -> Iterator[str]:
    """Comma-joined ids, each payload shorter than :data:`MAX_PAYLOAD` bytes."""
    batch: list[str] = []
    size = 0
    for device_id in device_ids:
        if batch and size + len(device_id) + 1 > MAX_PAYLOAD:
            yield ",".join(batch)
            batch, size = [], 0
        batch.append(device_id)
        size += len(device_id) + 1
    if batch:
        yield ",".join(batch)


class PgNotifier:
    """A :class:`~fleetcast.server.notify.Notifier` shared by every process on one database.

    Args:
        dsn: an asyncpg DSN (see :func:`asyncpg_dsn`).
        recheck: longest wait between two database checks of a long-poll.
    """

    def __init__(self, dsn: str, *, recheck: float) -> None:
        self.recheck = recheck
        self._dsn = dsn
        self._local = LocalNotifier(recheck=recheck)
        self._queue: asyncio.Queue[tuple[list[str], Callable[[], None] | None]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._lost = asyncio.Event()
        self._pid: int | None = None

    @property
    def waiting(self) -> int:
        """How many devices wait in this process."""
        return self._local.waiting

    def notify(self, device_ids: Iterable[str], *, push: bool = True) -> None:
        self.notify_then(device_ids, None)

    def notify_then(self, device_ids: Iterable[str], sent: Callable[[], None] | None) -> None:
        """Notify, and call ``sent`` once PostgreSQL has taken the notification for every
        other process (a device told to check in by MQTT must not reach another process
        before that process has forgotten its old answer)."""
        ids = list(device_ids)
        if ids:
            self._local.notify(ids)
            self._queue.put_nowait((ids, sent))

    def add_listener(self, listener: Listener) -> None:
        self._local.add_listener(listener)

    def subscribe(self, device_id: str) -> AbstractAsyncContextManager[Subscription]:
        return self._local.subscribe(device_id)

    async def start(self, wait: float = 10.0) -> None:
        """Start listening; return once the first connection listens (or after ``wait`` s)."""
        self._task = asyncio.create_task(self._run(), name="fleetcast-pg-notifier")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._listening.wait()

    async def close(self) -> None:
        """Stop listening; queued notifications that were not sent yet are dropped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_notification(self, _conn: object, pid: int, _channel: str, payload: object) -> None:
        if pid == self._pid or not isinstance(payload, str):
            return
        self._local.notify(payload.split(","))

    def _on_termination(self, _conn: object) -> None:
        self._lost.set()

    async def _run(self) -> None:
        failures = 0
        reconnected = False
        while True:
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
            except (OSError, asyncpg.PostgresError, TimeoutError) as e:
                delay = _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("notifier: cannot connect to PostgreSQL (%s); retry in %ss", e, delay)
                await asyncio.sleep(delay)
                continue
            try:
                self._lost.clear()
                conn.add_termination_listener(self._on_termination)
                self._pid = conn.get_server_pid()
                await conn.add_listener(CHANNEL, self._on_notification)
                failures = 0
                self._listening.set()
                if reconnected:
                    self._local.wake_all()
                reconnected = True
                await self._send_forever(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("notifier: PostgreSQL connection lost (%s); reconnecting", e)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))

    async def _send_forever(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.create_task(self._lost.wait())
        try:
            while True:
                get = asyncio.create_task(self._queue.get())
                done, _ = await asyncio.wait({get, lost}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    raise ConnectionResetError("listening connection terminated")
                ids, sent = item = get.result()
                try:
                    await conn.executemany(
                        "SELECT pg_notify($1, $2)", [(CHANNEL, p) for p in payloads(ids)]
                    )
                except BaseException:
                    # Not sent: the next connection sends it (other processes re-check anyway).
                    self._queue.put_nowait(item)
                    raise
                if sent is not None:
                    sent()
        finally:
            lost.cancel()
