"""The director: per-device ``timestamp``, ``snapshot`` and ``targets`` (ADR 0008).

A device's director ``targets`` says what it must install: at most one
target, the artifact its ``/next`` would offer now
(:func:`fleetcast.server.services.updates.next_deployment`, read only), with
the *image* repository's path, length and hashes for it, and
``custom.fleetcast = {deployment_id, allow_downgrade}``. An artifact with no
image target gives no director target. The signed part also carries
``x-fleetcast: {device_id, nonce}``, the nonce of the device's last accepted
version report.

The three roles share one version per device. It is generated lazily, when
the device fetches ``timestamp.json``, and bumped only when the content
(target, nonce, signing key) changes or the timestamp is past half its
life; otherwise the stored bytes are served. Bumps of one device are
serialised by a row lock on the device, and the primary key
(device, version) rejects a second, different version N even if a lock were
missed: the loser serves the winner's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp

from fleetcast.core.canonical import canonical_json
from fleetcast.server.db.models import Device
from fleetcast.server.db.trust_models import TufDirector
from fleetcast.server.errors import NotFoundError
from fleetcast.server.services import updates
from fleetcast.server.trust import keys, releases, reports, store
from fleetcast.server.trust.online import SERIALIZER
from fleetcast.trust import (
    CUSTOM_KEY,
    DIRECTOR_FIELD,
    DIRECTOR_LIFETIME,
    DIRECTOR_REPO,
    SPEC_VERSION,
    target_path,
)

#: Versions kept per device: the current one and the one before, for a client mid-refresh.
KEEP_VERSIONS: Final = 2


@dataclass(frozen=True)
class Content:
    """What one version of a device's director metadata says."""

    device_id: str
    target: TargetFile | None
    nonce: str | None
    keyid: str

    @property
    def sha256(self) -> str:
        target = self.target.to_dict() if self.target else None
        path = self.target.path if self.target else None
        body = {"target": target, "path": path, "nonce": self.nonce, "keyid": self.keyid}
        return hashlib.sha256(canonical_json(body)).hexdigest()


async def desired_target(session: AsyncSession, device: Device) -> TargetFile | None:
    """The director target of ``device`` now (see the module docstring)."""
    found = await updates.next_deployment(session, device)
    if found is None:
        return None
    deployment, artifact = found
    image = await releases.released_target(session, artifact)
    if image is None:
        return None
    custom = {
        CUSTOM_KEY: {
            "deployment_id": deployment.id,
            "allow_downgrade": bool(deployment.allow_downgrade),
        }
    }
    return TargetFile(
        length=image.length,
        hashes=dict(image.hashes),
        path=target_path(artifact.name, artifact.version),
        unrecognized_fields={"custom": custom},
    )


async def _content(session: AsyncSession, device: Device, now: dt.datetime) -> Content:
    report = await reports.last_report(session, device.id)
    key = (await keys.online_keys(session, now=now))["director"].active
    return Content(
        device_id=device.id,
        target=await desired_target(session, device),
        nonce=report.nonce if report else None,
        keyid=key.keyid,
    )


async def _latest(session: AsyncSession, device_id: str) -> TufDirector | None:
    row: TufDirector | None = await session.scalar(
        select(TufDirector)
        .where(TufDirector.device_id == device_id)
        .order_by(TufDirector.version.desc())
        .limit(1)
        .execution_options(populate_existing=True)
    )
    return row


def _fresh(row: TufDirector | None, content: Content, now: dt.datetime) -> bool:
    half = dt.timedelta(seconds=DIRECTOR_LIFETIME / 2)
    return row is not None and row.content_sha256 == content.sha256 and row.expires - now >= half


async def _sign(
    session: AsyncSession, content: Content, version: int, now: dt.datetime
) -> TufDirector:
    signer = await keys.active_signer(session, "director", now=now)
    expires = (now + dt.timedelta(seconds=DIRECTOR_LIFETIME)).replace(microsecond=0)
    extra: dict[str, Any] = {
        DIRECTOR_FIELD: {"device_id": content.device_id, "nonce": content.nonce}
    }
    targets = Targets(
        version=version,
        spec_version=SPEC_VERSION,
        expires=expires,
        targets={content.target.path: content.target} if content.target else {},
        unrecognized_fields=extra,
    )
    targets_md = Metadata(targets)
    targets_md.sign(signer)
    targets_bytes = targets_md.to_bytes(SERIALIZER)
    snapshot_md = Metadata(
        Snapshot(
            version=version,
            spec_version=SPEC_VERSION,
            expires=expires,
            meta={"targets.json": _meta(version, targets_bytes)},
        )
    )
    snapshot_md.sign(signer)
    snapshot_bytes = snapshot_md.to_bytes(SERIALIZER)
    timestamp_md = Metadata(
        Timestamp(
            version=version,
            spec_version=SPEC_VERSION,
            expires=expires,
            snapshot_meta=_meta(version, snapshot_bytes),
        )
    )
    timestamp_md.sign(signer)
    return TufDirector(
        device_id=content.device_id,
        version=version,
        nonce=content.nonce,
        content_sha256=content.sha256,
        timestamp=timestamp_md.to_bytes(SERIALIZER),
        snapshot=snapshot_bytes,
        targets=targets_bytes,
        expires=expires,
        created_at=now,
    )


def _meta(version: int, data: bytes) -> MetaFile:
    digest = hashlib.sha256(data).hexdigest()
    return MetaFile(version=version, length=len(data), hashes={"sha256": digest})


async def current(session: AsyncSession, device: Device, *, now: dt.datetime) -> TufDirector:
    """The device's current director metadata, signing a new version when due; commits.

    Raises:
        NotFoundError: the director repository has no root yet.
    """
    if await store.latest(session, DIRECTOR_REPO, "root") is None:
        raise NotFoundError(
            "the director repository is not set up (no root uploaded)",
            details={"repo": DIRECTOR_REPO},
        )
    device_id = device.id  # a rollback below expires the row
    content = await _content(session, device, now)
    row = await _latest(session, device_id)
    if _fresh(row, content, now):
        assert row is not None
        await session.commit()
        return row
    # Due: take the device's row lock, then look again, since another process may
    # have signed the same content meanwhile.
    await session.execute(select(Device.id).where(Device.id == device_id).with_for_update())
    row = await _latest(session, device_id)
    content = await _content(session, device, now)
    if _fresh(row, content, now):
        assert row is not None
        await session.commit()
        return row
    version = row.version + 1 if row else 1
    new = await _sign(session, content, version, now)
    session.add(new)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        winner = await _latest(session, device_id)
        assert winner is not None
        await session.commit()
        return winner
    await session.execute(
        delete(TufDirector).where(
            TufDirector.device_id == device_id, TufDirector.version <= version - KEEP_VERSIONS
        )
    )
    await session.commit()
    return new


async def read(
    session: AsyncSession, device: Device, name: store.FileName, *, now: dt.datetime
) -> bytes:
    """The bytes of the device's director file ``name`` (consistent-snapshot names only).

    Raises:
        NotFoundError: no such file for this device.
    """
    if name.role == "root" and name.version is not None:
        return (await store.read(session, DIRECTOR_REPO, name)).data
    if name.role == "timestamp" and name.version is None:
        return (await current(session, device, now=now)).timestamp
    if name.role in ("snapshot", "targets") and name.version is not None:
        row = await session.get(TufDirector, (device.id, name.version))
        if row is not None:
            return row.snapshot if name.role == "snapshot" else row.targets
    raise NotFoundError(
        f"device {device.id}'s director repository has no such file",
        details={"role": name.role, "version": name.version},
    )


__all__ = ["KEEP_VERSIONS", "Content", "current", "desired_target", "read"]
