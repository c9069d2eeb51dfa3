"""The image repository's online roles: ``snapshot`` and ``timestamp``, signed here.

A new snapshot lists the newest ``targets.json`` and every stored bin the
current targets delegates to, each with version, length and sha256, so a
client never needs a download cap; the timestamp lists the snapshot likewise.
Both are signed with the active online keys (:mod:`fleetcast.server.trust.keys`)
after every accepted image upload and by :func:`refresh` when less than half
of a lifetime is left. Callers hold the repository lock
(:data:`fleetcast.server.trust.store.REPOSITORY_LOCK`) and commit.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy.ext.asyncio import AsyncSession
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from fleetcast.server.db.trust_models import TufMetadata
from fleetcast.server.settings import Settings
from fleetcast.server.trust import keys, store
from fleetcast.server.trust.verify import succinct_roles
from fleetcast.trust import IMAGE_REPO, SPEC_VERSION

log = logging.getLogger(__name__)

#: Compact JSON: what the server signs is for machines.
SERIALIZER = JSONSerializer(compact=True)


def _expiry(now: dt.datetime, seconds: int) -> dt.datetime:
    return (now + dt.timedelta(seconds=seconds)).replace(microsecond=0)


def meta_file(row: TufMetadata | store.FileInfo) -> MetaFile:
    """What a snapshot or timestamp says of a stored file."""
    return MetaFile(version=row.version, length=row.length, hashes={"sha256": row.sha256})


async def sign_timestamp(
    session: AsyncSession, snapshot: TufMetadata, settings: Settings, now: dt.datetime
) -> TufMetadata:
    """Sign and store timestamp version N+1 pointing at ``snapshot``."""
    previous = await store.latest(session, IMAGE_REPO, "timestamp")
    timestamp = Timestamp(
        version=(previous.version + 1) if previous else 1,
        spec_version=SPEC_VERSION,
        expires=_expiry(now, settings.tuf_timestamp_lifetime),
        snapshot_meta=meta_file(snapshot),
    )
    md = Metadata(timestamp)
    md.sign(await keys.active_signer(session, "timestamp", now=now))
    return store.add(session, IMAGE_REPO, "timestamp", md, md.to_bytes(SERIALIZER), now=now)


async def sign_snapshot(session: AsyncSession, settings: Settings, now: dt.datetime) -> bool:
    """Sign a new snapshot of the current targets and bins, then a timestamp for it.

    Returns False (and signs nothing) while there is no image ``targets`` yet:
    a snapshot must list it.
    """
    targets_row = await store.latest(session, IMAGE_REPO, "targets")
    if targets_row is None:
        return False
    targets = store.parse(targets_row.data, "stored image targets")
    assert isinstance(targets.signed, Targets)
    succinct = succinct_roles(targets.signed)
    files = await store.newest_files(session, IMAGE_REPO)
    meta = {"targets.json": meta_file(files["targets"])}
    for role, info in sorted(files.items()):
        if succinct.is_delegated_role(role):
            meta[f"{role}.json"] = meta_file(info)
    previous = files.get("snapshot")
    snapshot = Snapshot(
        version=(previous.version + 1) if previous else 1,
        spec_version=SPEC_VERSION,
        expires=_expiry(now, settings.tuf_snapshot_lifetime),
        meta=meta,
    )
    md = Metadata(snapshot)
    md.sign(await keys.active_signer(session, "snapshot", now=now))
    row = store.add(session, IMAGE_REPO, "snapshot", md, md.to_bytes(SERIALIZER), now=now)
    await sign_timestamp(session, row, settings, now)
    return True


def _half_gone(expires: dt.datetime, lifetime: int, now: dt.datetime) -> bool:
    return expires - now < dt.timedelta(seconds=lifetime / 2)


async def refresh(session: AsyncSession, settings: Settings, now: dt.datetime) -> str | None:
    """Re-sign what has less than half its lifetime left.

    Returns ``"snapshot"`` (snapshot and timestamp re-signed), ``"timestamp"``
    (timestamp only) or None (nothing due, or no repository yet).
    """
    snapshot = await store.latest(session, IMAGE_REPO, "snapshot")
    if snapshot is None or _half_gone(snapshot.expires, settings.tuf_snapshot_lifetime, now):
        if await sign_snapshot(session, settings, now):
            log.info("image snapshot and timestamp re-signed")
            return "snapshot"
        return None
    timestamp = await store.latest(session, IMAGE_REPO, "timestamp")
    if timestamp is None or _half_gone(timestamp.expires, settings.tuf_timestamp_lifetime, now):
        await sign_timestamp(session, snapshot, settings, now)
        log.info("image timestamp re-signed")
        return "timestamp"
    return None


__all__ = ["SERIALIZER", "meta_file", "refresh", "sign_snapshot", "sign_timestamp"]
