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
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import cast

from sqlalchemy import Table, bindparam, update

from fleetcast.server.db.engine import Database
from fleetcast.server.db.models import Device, utcnow
from fleetcast.server.services.devices import LAST_SEEN_GRANULARITY

log = logging.getLogger(__name__)

#: Rows per UPDATE statement batch.
_BATCH = 5000


class LastSeen:
    """The per-process buffer of last-seen times (see the module docstring)."""

    def __init__(self, db: Database, *, interval: float) -> None:
        self._db = db
        self._interval = interval
        self._pending: dict[str, dt.datetime] = {}

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

    @property
    def pending(self) -> int:
        """Devices recorded since the last flush."""
        return len(self._pending)

    async def flush(self) -> int:
        """Write what was recorded since the last flush; return how many devices."""
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
