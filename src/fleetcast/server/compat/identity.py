"""Identities and rows of DDI and Mender devices.

A device's identity is a small object: ``{"controller_id": ...}`` for a
hawkBit DDI device, the Mender client's ``id_data`` (e.g. ``{"mac": ...}``)
for a Mender device. Its lookup hash includes the kind, so a Mender device
whose identity happens to equal a native agent's is still another device.
"""

from __future__ import annotations

import hashlib
import uuid

from fleetcast.core.canonical import canonical_json
from fleetcast.server.db.models import Device
from fleetcast.server.services.formats import DeviceKind
from fleetcast.server.states import DeviceStatus


def identity_hash(kind: DeviceKind, identity: dict[str, str]) -> tuple[str, str]:
    """The canonical identity JSON and the lookup hash for a device of ``kind``."""
    text = canonical_json(identity).decode()
    if kind == DeviceKind.NATIVE:
        return text, hashlib.sha256(text.encode()).hexdigest()
    return text, hashlib.sha256(f"{kind.value}:{text}".encode()).hexdigest()


def new_compat_device(
    kind: DeviceKind,
    identity: dict[str, str],
    *,
    device_type: str,
    status: DeviceStatus,
    public_key_pem: str = "",
    public_key_id: str = "",
) -> Device:
    """A new DDI or Mender device row (not yet added to a session)."""
    identity_json, lookup = identity_hash(kind, identity)
    return Device(
        id=str(uuid.uuid4()),
        kind=kind.value,
        identity_json=identity_json,
        identity_hash=lookup,
        public_key=public_key_pem,
        public_key_id=public_key_id,
        device_type=device_type,
        status=status.value,
        attributes={},
        tags=[],
    )
