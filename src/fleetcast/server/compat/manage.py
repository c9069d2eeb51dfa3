"""The operator's side of DDI and Mender devices: preauthorizing them, DDI target tokens.

- ``POST /api/v1/devices/preauthorize`` with ``kind: ddi`` registers a
  controller id (``identity: {"controller_id": ...}``, no key); with
  ``kind: mender`` an ``id_data`` identity and the device's RSA, ECDSA or
  Ed25519 public key. The device is accepted on its first contact.
- ``POST /api/v1/devices/{id}/target-token`` sets a DDI device's
  ``TargetToken`` (given, or generated and shown once; only its hash is kept).
"""

from __future__ import annotations

import secrets
from typing import Final

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.server.api.audit import audit_trail
from fleetcast.server.api.deps import Session, current_admin
from fleetcast.server.api.schemas import ErrorResponse
from fleetcast.server.compat.identity import identity_hash, new_compat_device
from fleetcast.server.compat.mender_service import load_public_key
from fleetcast.server.db.models import Device, utcnow
from fleetcast.server.errors import ConflictError, RequestInvalidError
from fleetcast.server.services.credentials import hash_token
from fleetcast.server.services.devices import add_event, get_device
from fleetcast.server.services.formats import DeviceKind
from fleetcast.server.states import DeviceStatus

MIN_TOKEN: Final = 16


async def preauthorize(
    session: AsyncSession,
    kind: DeviceKind,
    identity: dict[str, str],
    public_key_pem: str | None,
    device_type: str,
) -> Device:
    """Register a DDI or Mender device beforehand; it is accepted on first contact.

    Raises:
        RequestInvalidError: a DDI identity other than ``{"controller_id"}``, or
            a Mender device without a key.
        ValidationError: the Mender public key is not usable.
        ConflictError: a device with this identity exists.
    """
    pem, keyid = "", ""
    if kind == DeviceKind.DDI:
        if set(identity) != {"controller_id"} or not identity["controller_id"]:
            raise RequestInvalidError(
                'a DDI device\'s identity is {"controller_id": "..."}',
                details={"field": "identity"},
            )
    else:
        if not public_key_pem:
            raise RequestInvalidError(
                "a Mender device is preauthorized with its public key",
                details={"field": "public_key"},
            )
        _, pem, keyid = load_public_key(public_key_pem)
    _, lookup = identity_hash(kind, identity)
    existing = await session.scalar(select(Device.id).where(Device.identity_hash == lookup))
    if existing is not None:
        raise ConflictError(
            f"a device with this identity exists ({existing})", details={"device_id": existing}
        )
    device = new_compat_device(
        kind,
        identity,
        device_type=device_type,
        status=DeviceStatus.PREAUTHORIZED,
        public_key_pem=pem,
        public_key_id=keyid,
    )
    session.add(device)
    add_event(session, device.id, kind="admission", state=device.status, message="preauthorized")
    await session.commit()
    await session.refresh(device)
    return device


async def set_target_token(session: AsyncSession, device_id: str, token: str | None) -> str:
    """Give a DDI device a TargetToken (generated when None); return it.

    Raises:
        NotFoundError: no such device.
        RequestInvalidError: not a DDI device, or a token shorter than 16 characters.
    """
    device = await get_device(session, device_id)
    if device.kind != DeviceKind.DDI:
        raise RequestInvalidError(
            f"device {device_id} is a {device.kind} device; only DDI devices have target tokens"
        )
    if token is not None and len(token) < MIN_TOKEN:
        raise RequestInvalidError(f"a target token has at least {MIN_TOKEN} characters")
    plain = token or secrets.token_hex(16)
    device.target_token_hash = hash_token(plain)
    device.updated_at = utcnow()
    add_event(session, device.id, kind="admission", state=device.status, message="target token set")
    await session.commit()
    return plain


class TargetTokenIn(BaseModel):
    token: str | None = Field(
        default=None, max_length=256, description="Omitted: the server generates one."
    )


class TargetTokenOut(BaseModel):
    token: str = Field(description="The TargetToken; shown once, only its hash is stored.")


router = APIRouter(
    prefix="/api/v1/devices",
    tags=["devices"],
    dependencies=[
        Depends(audit_trail, scope="function"),
        Depends(current_admin, scope="function"),
    ],
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)


@router.post("/{device_id}/target-token", response_model=TargetTokenOut)
async def target_token(device_id: str, body: TargetTokenIn, session: Session) -> TargetTokenOut:
    """Set a hawkBit DDI device's TargetToken (the client's ``targettoken``)."""
    return TargetTokenOut(token=await set_target_token(session, device_id, body.token))
