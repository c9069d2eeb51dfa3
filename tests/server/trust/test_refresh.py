"""Snapshot and timestamp stay fresh without the operator: the background refresh.

The clock is injected: a round at "now + 13 hours" finds the one-day
timestamp past half its life and re-signs it; at "now + 4 days" the
seven-day snapshot too. On PostgreSQL only one process refreshes at a time.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from tuf.api.metadata import Metadata, Timestamp

from fleetcast.server.trust.refresh import TufRefresher, refresh_once
from fleetcast.server.trust.store import REPOSITORY_LOCK
from tests.server.trust.operator import TufRepo


async def _versions(repo: TufRepo) -> tuple[int, int]:
    image = (await repo.server.admin.get("/api/v1/tuf")).json()["image"]
    return image["snapshot"]["version"], image["timestamp"]["version"]


async def test_refresh_re_signs_what_is_past_half_its_lifetime(repo: TufRepo) -> None:
    """Nothing is due at first; the timestamp after 13 h; both after 4 days; all verify."""
    state = repo.server.state
    db, settings = state.db, state.settings
    now = dt.datetime.now(dt.UTC)
    snapshot, timestamp = await _versions(repo)
    assert await refresh_once(db, settings, now=now + dt.timedelta(hours=1)) is None
    assert await _versions(repo) == (snapshot, timestamp)

    later = now + dt.timedelta(hours=13)
    assert await refresh_once(db, settings, now=later) == "timestamp"
    assert await _versions(repo) == (snapshot, timestamp + 1)
    served = Metadata[Timestamp].from_bytes(
        (await repo.server.admin.get("/api/v1/tuf/image/timestamp.json")).content
    )
    assert served.signed.expires == (later + dt.timedelta(days=1)).replace(microsecond=0)
    assert served.signed.snapshot_meta.version == snapshot
    repo.image_roots[-1].signed.verify_delegate("timestamp", served.signed_bytes, served.signatures)
    assert await refresh_once(db, settings, now=later) is None  # fresh again

    refresher = TufRefresher(db, settings, clock=lambda: now + dt.timedelta(days=4))
    assert await refresher.tick() == "snapshot"
    assert await _versions(repo) == (snapshot + 1, timestamp + 2)


async def test_only_one_process_refreshes_at_a_time(repo: TufRepo) -> None:
    """While another process holds the repository lock, a refresh round does nothing."""
    state = repo.server.state
    if state.db.dialect != "postgresql":
        return  # one writer at a time is what SQLite is
    before = await _versions(repo)
    async with state.db.sessions() as other:
        assert await other.scalar(select(func.pg_try_advisory_xact_lock(REPOSITORY_LOCK)))
        due = dt.datetime.now(dt.UTC) + dt.timedelta(days=4)
        assert await refresh_once(state.db, state.settings, now=due) is None
        await other.rollback()
    assert await _versions(repo) == before
    assert await refresh_once(state.db, state.settings, now=due) == "snapshot"
