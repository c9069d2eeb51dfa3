"""The background task that keeps the image repository's snapshot and timestamp fresh.

Every ``interval`` seconds, one process (whichever takes the repository's
PostgreSQL advisory lock without waiting; the others skip that round)
re-signs what has less than half its lifetime left
(:func:`fleetcast.server.trust.online.refresh`). Director metadata needs no
task: it is re-signed when a device fetches it past half its life.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from fleetcast.server.db.engine import Database
from fleetcast.server.db.models import utcnow
from fleetcast.server.settings import Settings
from fleetcast.server.trust import online, store

log = logging.getLogger(__name__)

#: Longest pause between two looks; shorter lifetimes get proportionally shorter pauses.
MAX_INTERVAL = 60.0


async def refresh_once(db: Database, settings: Settings, *, now: dt.datetime) -> str | None:
    """One round: re-sign what is due, unless another process is writing the repository.

    Returns what was re-signed (``"snapshot"``, ``"timestamp"``) or None.
    """
    async with db.sessions() as session:
        if not await store.try_advisory_lock(session, store.REPOSITORY_LOCK):
            return None
        done = await online.refresh(session, settings, now)
        await session.commit()
        return done


class TufRefresher:
    """Runs :func:`refresh_once` every ``interval`` seconds until cancelled."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        interval: float | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._db = db
        self._settings = settings
        self._clock = clock
        lifetime = min(settings.tuf_timestamp_lifetime, settings.tuf_snapshot_lifetime)
        self.interval = interval if interval is not None else min(MAX_INTERVAL, lifetime / 8)

    async def tick(self) -> str | None:
        return await refresh_once(self._db, self._settings, now=self._clock())

    async def run(self) -> None:
        """Refresh until cancelled; an error in one round is logged, not fatal."""
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("TUF snapshot/timestamp refresh failed; retrying next interval")
            await asyncio.sleep(self.interval)


__all__ = ["TufRefresher", "refresh_once"]
