"""Devices' last-seen times, kept in memory and written in batches.

An idle check-in must not write to the database: with a million devices
polling, one ``UPDATE`` per poll would make polling write-bound (and on
SQLite, serialise every poll behind the single writer). Each process
records "device X was seen at T" in a dict instead, and a background task
writes everything recorded since the last flush in one transaction every
``interval`` seconds, and once more at shutdown. A device already written
less than :data:`~fleetcast.server.services.devices.LAST_SEEN_GRANULARITY`
ago is not recorded again, so each device costs at most one row update per
granularity period however often it polls.

A crash loses at most one interval of last-seen times, which only delays
the console's "online" view; nothing else reads them.

Download accounting (the bytes each deployment member was sent,
``bytes_shipped``) is buffered the same way: a download request adds its
served length to a per-(device, artifact) sum in memory and the flush books
the sums (:func:`~fleetcast.server.services.deltas.record_download`), so
authorising a download writes nothing. The management API sees its own
process's sums at once (:class:`FlushBeforeReads` flushes before a
management request when anything is pending); another process's sums
arrive with its next flush, and a crash loses at most one interval of them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING, cast

from sqlalchemy import Table, bindparam, update

from fleetcast.server.db.engine import Database
from fleetcast.server.db.models import Device, utcnow
from fleetcast.server.services.deltas import record_download
from fleetcast.server.services.devices import LAST_SEEN_GRANULARITY

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

#: Rows per UPDATE statement batch.
_BATCH = 5000


class LastSeen:
    """The per-process buffer of last-seen times (see the module docstring)."""

    def __init__(self, db: Database, *, interval: float) -> None:
        self._db = db
        self._interval = interval
        self._pending: dict[str, dt.datetime] = {}
        self._downloads: dict[tuple[str, str], int] = {}
        self._lock = asyncio.Lock()

    def seen(
        self, device_id: str, previous: dt.datetime | None, now: dt.datetime | None
    ) -> dt.datetime | None:
        """Record a check-in; ``previous`` is the stored last-seen time (None: never).

        Returns the time recorded, or None when ``previous`` is recent enough.
        """
        moment = now or utcnow()
        if previous is not None and moment - previous < LAST_SEEN_GRANULARITY:
            return None
        self._pending[device_id] = moment
        return moment

    def downloaded(self, device_id: str, artifact_id: str, served: int) -> None:
        """Record that ``served`` bytes of ``artifact_id`` are being sent to ``device_id``."""
        key = (device_id, artifact_id)
        self._downloads[key] = self._downloads.get(key, 0) + served

    @property
    def pending(self) -> int:
        """Devices recorded since the last flush."""
        return len(self._pending)

    @property
    def pending_downloads(self) -> int:
        """(device, artifact) download sums recorded since the last flush."""
        return len(self._downloads)

    async def flush(self) -> int:
        """Write what was recorded since the last flush; return how many devices.

        Download sums first (each booked on the device's membership, as
        :func:`~fleetcast.server.services.deltas.record_download` does), then
        last-seen times. Flushes never overlap.
        """
        async with self._lock:
            await self._flush_downloads()
            return await self._flush_seen()

    async def _flush_downloads(self) -> None:
        if not self._downloads:
            return
        batch, self._downloads = self._downloads, {}
        try:
            async with self._db.sessions() as session:
                for (device_id, artifact_id), served in batch.items():
                    # A transient row: record_download only reads its id.
                    await record_download(session, Device(id=device_id), artifact_id, served)
        except BaseException:
            for key, served in batch.items():
                self._downloads[key] = self._downloads.get(key, 0) + served
            raise

    async def _flush_seen(self) -> int:
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        rows = [{"b_id": device_id, "b_seen": seen} for device_id, seen in batch.items()]
        table = cast("Table", Device.__table__)
        # Core, not ORM: an executemany UPDATE by id. updated_at is kept as is
        # (being seen is not a change of the device).
        statement = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(last_seen_at=bindparam("b_seen"), updated_at=table.c.updated_at)
        )
        try:
            async with self._db.sessions() as session:
                connection = await session.connection()
                for start in range(0, len(rows), _BATCH):
                    await connection.execute(statement, rows[start : start + _BATCH])
                await session.commit()
        except BaseException:
            # Keep what failed for the next flush (newer sightings win).
            for device_id, seen in batch.items():
                self._pending.setdefault(device_id, seen)
            raise
        return len(rows)

    async def run(self) -> None:
        """Flush every ``interval`` seconds until cancelled; flush once more then."""
        try:
            while True:
                await asyncio.sleep(self._interval)
                try:
                    await self.flush()
                except Exception:
                    log.exception("writing last-seen times failed; retrying next interval")
        finally:
            try:
                await asyncio.shield(self.flush())
            except Exception:
                log.exception("writing last-seen times at shutdown failed")


class FlushBeforeReads:
    """ASGI middleware: flushes ``LastSeen`` before a request under ``prefix`` when needed.

    So that the management API's deployment statistics reflect every
    download this process answered before the request (last-seen times
    alone do not trigger it: they are coarse anyway). Costs a ``len()``
    when nothing is pending.

    Args:
        app: the application behind.
        prefix: the path prefix of the reading API (``/api/v1/``).
    """

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            state = getattr(getattr(scope.get("app"), "state", None), "fleetcast", None)
            last_seen = getattr(state, "last_seen", None)
            if isinstance(last_seen, LastSeen) and last_seen.pending_downloads:
                await last_seen.flush()
        await self.app(scope, receive, send)
