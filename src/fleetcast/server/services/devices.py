"""Devices: the inventory, the operator's admission decisions, tags and history."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Final

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.core.canonical import canonical_json
from fleetcast.core.signing import key_id, public_key_from_pem
from fleetcast.core.wire import Inventory
from fleetcast.server.db.models import (
    DeploymentDevice,
    Device,
    DeviceEvent,
    DeviceTag,
    utcnow,
)
from fleetcast.server.errors import ConflictError, NotFoundError, RequestInvalidError
from fleetcast.server.states import IN_PROGRESS, DeviceStatus, RolloutState

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
MAX_TAGS: Final = 64
# last_seen_at is written at most this often per device, so polling stays read-mostly.
LAST_SEEN_GRANULARITY: Final = dt.timedelta(seconds=30)


def identity_key(identity: dict[str, str]) -> tuple[str, str]:
    """Return the canonical identity JSON and its sha256 (the lookup key)."""
    text = canonical_json(identity).decode()
    return text, hashlib.sha256(text.encode()).hexdigest()


def new_device(
    identity: dict[str, str], public_key_pem: str, device_type: str, status: DeviceStatus
) -> Device:
    """A new device row (not yet added to a session).

    Raises:
        ValidationError: ``public_key_pem`` is not an Ed25519 public key.
    """
    identity_json, identity_hash = identity_key(identity)
    return Device(
        id=str(uuid.uuid4()),
        identity_json=identity_json,
        identity_hash=identity_hash,
        public_key=public_key_pem,
        public_key_id=key_id(public_key_from_pem(public_key_pem)),
        device_type=device_type,
        status=status.value,
        attributes={},
        tags=[],
    )


def identity_of(device: Device) -> dict[str, str]:
    value = json.loads(device.identity_json)
    return {str(k): str(v) for k, v in value.items()}


def add_event(
    session: AsyncSession,
    device_id: str,
    *,
    kind: str,
    state: str,
    message: str = "",
    deployment_id: str | None = None,
    artifact: tuple[str, str] | None = None,
    log_tail: Sequence[str] = (),
    rolled_back: bool = False,
) -> None:
    """Append one history entry (never updated afterwards)."""
    session.add(
        DeviceEvent(
            device_id=device_id,
            deployment_id=deployment_id,
            artifact_name=artifact[0] if artifact else None,
            artifact_version=artifact[1] if artifact else None,
            at=utcnow(),
            kind=kind,
            state=state,
            message=message,
            log_tail=list(log_tail),
            rolled_back=rolled_back,
        )
    )


async def get_device(session: AsyncSession, device_id: str) -> Device:
    """Raises: NotFoundError: no such device."""
    device = await session.get(Device, device_id)
    if device is None:
        raise NotFoundError(f"device {device_id} not found", details={"device_id": device_id})
    return device


def parse_attribute_filters(filters: Sequence[str]) -> dict[str, str]:
    """Turn ``["key=value", ...]`` into a mapping.

    Raises:
        RequestInvalidError: a filter has no ``=`` or an empty key.
    """
    parsed: dict[str, str] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RequestInvalidError(
                f"attribute filter {item!r} is not KEY=VALUE", details={"attribute": item}
            )
        parsed[key] = value
    return parsed


async def list_devices(
    session: AsyncSession,
    *,
    status: DeviceStatus | None = None,
    device_type: str | None = None,
    tag: str | None = None,
    q: str | None = None,
    artifact_name: str | None = None,
    artifact_version: str | None = None,
    attributes: Mapping[str, str] | None = None,
    seen_since: dt.datetime | None = None,
    online: bool | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Device], int]:
    """Return one page of devices (newest first) and the total matching the filters.

    ``attributes`` must all match exactly (AND). ``online`` True keeps the
    devices seen at or after ``seen_since``, False the others (including
    devices never seen); it needs ``seen_since``.
    """
    query: Select[Device] = select(Device)
    if status is not None:
        query = query.where(Device.status == status.value)
    if device_type:
        query = query.where(Device.device_type == device_type)
    if tag:
        query = query.where(Device.id.in_(select(DeviceTag.device_id).where(DeviceTag.tag == tag)))
    if q:
        pattern = f"%{q}%"
        query = query.where(or_(Device.identity_json.like(pattern), Device.id.like(pattern)))
    if artifact_name:
        query = query.where(Device.artifact_name == artifact_name)
    if artifact_version:
        query = query.where(Device.artifact_version == artifact_version)
    for key, value in (attributes or {}).items():
        query = query.where(Device.attributes[key].as_string() == value)
    if online is not None and seen_since is not None:
        if online:
            query = query.where(Device.last_seen_at >= seen_since)
        else:
            query = query.where(
                or_(Device.last_seen_at.is_(None), Device.last_seen_at < seen_since)
            )
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(Device.created_at.desc(), Device.id).limit(limit).offset(offset)
    )
    return list(rows), int(total or 0)


async def _abort_memberships(session: AsyncSession, device_id: str) -> None:
    # A device that can no longer talk to us would keep its phase open forever.
    await session.execute(
        update(DeploymentDevice)
        .where(
            DeploymentDevice.device_id == device_id,
            DeploymentDevice.state.in_(
                [RolloutState.PENDING, RolloutState.SCHEDULED, *IN_PROGRESS]
            ),
        )
        .values(state=RolloutState.ABORTED.value, updated_at=utcnow())
    )


async def set_status(
    session: AsyncSession, device_id: str, status: DeviceStatus, *, message: str
) -> Device:
    """Accept, reject or decommission a device; record it in the history.

    Rejecting or decommissioning also ends the device's unfinished deployment
    memberships (state ``aborted``), so they do not hold a phase open.

    Raises:
        NotFoundError: no such device.
        ConflictError: the device is decommissioned (final).
    """
    device = await get_device(session, device_id)
    if device.status == DeviceStatus.DECOMMISSIONED and status != DeviceStatus.DECOMMISSIONED:
        raise ConflictError(
            f"device {device_id} is decommissioned; that is final",
            details={"device_id": device_id, "status": device.status},
        )
    if device.status != status.value:
        device.status = status.value
        add_event(session, device.id, kind="admission", state=status.value, message=message)
        if status in (DeviceStatus.REJECTED, DeviceStatus.DECOMMISSIONED):
            await _abort_memberships(session, device.id)
    await session.commit()
    return device


def check_tags(tags: Sequence[str]) -> list[str]:
    bad = [t for t in tags if not _TAG.match(t)]
    if bad:
        raise RequestInvalidError(
            f"invalid tag(s): {', '.join(map(repr, bad))} (letters, digits, '._:+-', max 128)",
            details={"tags": bad},
        )
    unique = sorted(set(tags))
    if len(unique) > MAX_TAGS:
        raise RequestInvalidError(f"a device can have at most {MAX_TAGS} tags")
    return unique


async def set_tags(session: AsyncSession, device_id: str, tags: Sequence[str]) -> Device:
    """Replace a device's tags.

    Raises:
        NotFoundError: no such device.
        RequestInvalidError: a tag is malformed or there are too many.
    """
    clean = check_tags(tags)
    device = await get_device(session, device_id)
    device.tags = [DeviceTag(device_id=device.id, tag=t) for t in clean]
    device.updated_at = utcnow()
    await session.commit()
    await session.refresh(device)
    return device


def apply_tags(device: Device, tags: Sequence[str]) -> None:
    """Add tags to a device (enrollment tokens); keeps the existing ones."""
    have = set(device.tag_names)
    device.tags.extend(DeviceTag(device_id=device.id, tag=t) for t in sorted(set(tags) - have))


async def preauthorize(
    session: AsyncSession, identity: dict[str, str], public_key_pem: str, device_type: str
) -> Device:
    """Register a device beforehand; it is accepted on first contact with that key.

    Raises:
        ConflictError: a device with this identity exists.
        ValidationError: the public key is not Ed25519 PEM.
    """
    device = new_device(identity, public_key_pem, device_type, DeviceStatus.PREAUTHORIZED)
    existing = await session.scalar(
        select(Device.id).where(Device.identity_hash == device.identity_hash)
    )
    if existing is not None:
        raise ConflictError(
            f"a device with this identity exists ({existing})", details={"device_id": existing}
        )
    session.add(device)
    add_event(session, device.id, kind="admission", state=device.status, message="preauthorized")
    await session.commit()
    return device


async def replace_key(session: AsyncSession, device_id: str, public_key_pem: str) -> Device:
    """Give a native device a new identity key (the operator's side of a key rotation).

    The device keeps its id, status, tags and history; from now on only the
    new key signs in (the old one gets 401 ``key_mismatch``). Tokens issued
    before stay valid until they expire, so a device that rotates its key
    itself is not cut off mid-update.

    Raises:
        NotFoundError: no such device.
        ConflictError: not a native device, or decommissioned.
        ValidationError: the key is not Ed25519 PEM.
    """
    device = await get_device(session, device_id)
    if device.kind != "native":
        raise ConflictError(
            f"device {device_id} is a {device.kind} device; only native devices have an "
            "identity key to replace here",
            details={"device_id": device_id, "kind": device.kind},
        )
    if device.status == DeviceStatus.DECOMMISSIONED:
        raise ConflictError(
            f"device {device_id} is decommissioned; that is final",
            details={"device_id": device_id, "status": device.status},
        )
    new_id = key_id(public_key_from_pem(public_key_pem))
    if new_id != device.public_key_id:
        device.public_key = public_key_pem
        device.public_key_id = new_id
        add_event(
            session, device.id, kind="admission", state=device.status,
            message=f"identity key replaced (key {new_id[:12]})",
        )  # fmt: skip
    await session.commit()
    return device


async def history(session: AsyncSession, device_id: str) -> list[DeviceEvent]:
    """Every status report and admission change of a device, oldest first.

    Raises:
        NotFoundError: no such device.
    """
    await get_device(session, device_id)
    rows = await session.scalars(
        select(DeviceEvent).where(DeviceEvent.device_id == device_id).order_by(DeviceEvent.id)
    )
    return list(rows)


async def identities(session: AsyncSession, device_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """The identities of the given devices, by id (unknown ids are left out)."""
    if not device_ids:
        return {}
    rows = await session.execute(
        select(Device.id, Device.identity_json).where(Device.id.in_(device_ids))
    )
    return {
        device_id: {str(k): str(v) for k, v in json.loads(text).items()} for device_id, text in rows
    }


async def recent_events(
    session: AsyncSession,
    *,
    kind: str | None = None,
    state: str | None = None,
    deployment_id: str | None = None,
    device_id: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[DeviceEvent]:
    """History entries across the fleet, newest first; ``before`` pages by event id."""
    query = select(DeviceEvent)
    if kind:
        query = query.where(DeviceEvent.kind == kind)
    if state:
        query = query.where(DeviceEvent.state == state)
    if deployment_id:
        query = query.where(DeviceEvent.deployment_id == deployment_id)
    if device_id:
        query = query.where(DeviceEvent.device_id == device_id)
    if before is not None:
        query = query.where(DeviceEvent.id < before)
    rows = await session.scalars(query.order_by(DeviceEvent.id.desc()).limit(limit))
    return list(rows)


async def update_inventory(session: AsyncSession, device: Device, inventory: Inventory) -> None:
    """Store what the device says it has."""
    device.device_type = inventory.device_type
    device.artifact_name = inventory.artifact_name
    device.artifact_version = inventory.artifact_version
    device.attributes = dict(inventory.attributes)
    device.last_seen_at = utcnow()
    await session.commit()


async def touch(session: AsyncSession, device: Device) -> None:
    """Record that the device was seen, writing at most every ``LAST_SEEN_GRANULARITY``."""
    now = utcnow()
    if device.last_seen_at is None or now - device.last_seen_at >= LAST_SEEN_GRANULARITY:
        await session.execute(
            update(Device)
            .where(Device.id == device.id)
            .values(last_seen_at=now, updated_at=Device.updated_at)
        )
        device.last_seen_at = now
        await session.commit()
