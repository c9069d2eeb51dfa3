"""Admission: who a device is, whether it may talk to us, and its bearer tokens.

``POST /auth`` workflow:

0. the caller's address and the identity must be within their budget of
   attempts (a token bucket each, in this process: 429 ``rate_limited``);
1. the body names the identity, device type and public key; the header
   ``X-Fleetcast-Signature`` signs the exact body bytes with that key, which
   proves possession of it;
2. the timestamp must be within ``auth_clock_skew`` of the server clock, so
   a captured request cannot be replayed later;
3. the identity (canonical JSON) finds the device, created ``pending`` on
   first contact; a known identity must come with the same key;
4. the device is accepted when an operator accepted it, when it was
   preauthorized with this key, or when it presents a valid enrollment
   token; then it gets a short-lived HMAC token.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload

from fleetcast.core.signing import public_key_from_pem
from fleetcast.core.wire import AuthRequest, AuthResponse
from fleetcast.exceptions import ValidationError
from fleetcast.server.db.models import Device, utcnow
from fleetcast.server.errors import (
    BadSignatureError,
    DevicePendingError,
    DeviceRejectedError,
    KeyMismatchError,
    StaleRequestError,
    UnauthorizedError,
)
from fleetcast.server.ratelimit import AuthRateLimits
from fleetcast.server.services.credentials import DeviceTokenSigner, find_enrollment_token
from fleetcast.server.services.devices import add_event, apply_tags, identity_key, new_device
from fleetcast.server.states import DeviceStatus


@dataclass(frozen=True)
class AdmissionPolicy:
    """What admission needs from the server's configuration."""

    signer: DeviceTokenSigner
    token_ttl: int
    clock_skew: int
    rate_limits: AuthRateLimits = field(default_factory=AuthRateLimits)


def _check_signature(public_key_pem: str, body: bytes, signature_hex: str | None) -> None:
    key = public_key_from_pem(public_key_pem)
    if not signature_hex:
        raise BadSignatureError("the X-Fleetcast-Signature header is missing")
    try:
        key.verify(bytes.fromhex(signature_hex.strip()), body)
    except (ValueError, InvalidSignature) as e:
        raise BadSignatureError(
            "X-Fleetcast-Signature does not verify with the request's public key"
        ) from e


def _reject_if_barred(device: Device) -> None:
    if device.status in (DeviceStatus.REJECTED, DeviceStatus.DECOMMISSIONED):
        raise DeviceRejectedError(
            f"device {device.id} is {device.status}", details={"device_id": device.id}
        )


async def authenticate(
    session: AsyncSession,
    body: bytes,
    signature_hex: str | None,
    policy: AdmissionPolicy,
    *,
    client: str | None = None,
    now: float | None = None,
) -> AuthResponse:
    """Admit a device or say why not.

    ``client`` (the caller's address) and the identity each have a budget of
    attempts (``policy.rate_limits``), checked before any signature work.

    Raises:
        RateLimitedError: too many attempts from this address or for this identity.
        ValidationError: the body or its public key is malformed.
        BadSignatureError: signature missing or invalid.
        StaleRequestError: timestamp outside the allowed clock skew.
        KeyMismatchError: identity known with another key.
        DevicePendingError: waiting for an operator.
        DeviceRejectedError: rejected or decommissioned.
    """
    policy.rate_limits.check_client(client)
    try:
        request = AuthRequest.from_dict(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValidationError(f"auth request is not JSON: {e}") from e
    _, identity_hash = identity_key(request.identity)
    policy.rate_limits.check_identity(identity_hash)
    _check_signature(request.public_key, body, signature_hex)
    clock = now if now is not None else time.time()
    if abs(request.timestamp - clock) > policy.clock_skew:
        raise StaleRequestError(
            f"timestamp {request.timestamp} is more than {policy.clock_skew}s from the "
            f"server clock ({int(clock)}); check the device clock",
            details={"server_time": int(clock)},
        )
    device = await session.scalar(select(Device).where(Device.identity_hash == identity_hash))
    if device is None:
        device = await _first_contact(session, request)
    else:
        _reject_if_barred(device)
        if device.public_key.strip() != request.public_key.strip():
            raise KeyMismatchError(
                f"device {device.id} is known with another public key",
                details={"device_id": device.id},
            )
        device.device_type = request.device_type
        await _maybe_accept(session, device, request)
    device.last_seen_at = utcnow()
    await session.commit()
    if device.status != DeviceStatus.ACCEPTED:
        raise DevicePendingError(
            "device is waiting for an operator to accept it", details={"device_id": device.id}
        )
    return AuthResponse(
        device.id, policy.signer.issue(device.id, policy.token_ttl, now=now), policy.token_ttl
    )


async def _first_contact(session: AsyncSession, request: AuthRequest) -> Device:
    device = new_device(
        request.identity, request.public_key, request.device_type, DeviceStatus.PENDING
    )
    session.add(device)
    add_event(session, device.id, kind="admission", state=device.status, message="first contact")
    try:
        await session.flush()
    except DBIntegrityError:
        # Two first contacts raced; the other one created the device.
        await session.rollback()
        raise DevicePendingError("device is waiting for an operator to accept it") from None
    await _maybe_accept(session, device, request)
    return device


async def _maybe_accept(session: AsyncSession, device: Device, request: AuthRequest) -> None:
    if device.status == DeviceStatus.ACCEPTED:
        return
    reason = None
    if device.status == DeviceStatus.PREAUTHORIZED:
        reason = "preauthorized key presented"
    elif request.enrollment_token:
        token = await find_enrollment_token(session, request.enrollment_token)
        if token is not None:
            token.uses += 1
            apply_tags(device, token.tags)
            reason = "enrollment token"
    if reason is not None:
        device.status = DeviceStatus.ACCEPTED.value
        add_event(session, device.id, kind="admission", state=device.status, message=reason)


async def device_for_token(
    session: AsyncSession, signer: DeviceTokenSigner, token: str | None
) -> Device:
    """Return the accepted device a bearer token belongs to.

    Raises:
        UnauthorizedError: missing, invalid or expired token, or unknown device.
        DeviceRejectedError: the device was rejected or decommissioned since.
    """
    if not token:
        raise UnauthorizedError("this endpoint needs 'Authorization: Bearer <device token>'")
    device_id = signer.verify(token)
    # The device API never needs the tags: one query instead of two per request.
    device = await session.get(Device, device_id, options=[raiseload(Device.tags)])
    if device is None:
        raise UnauthorizedError("device token names an unknown device")
    _reject_if_barred(device)
    if device.status != DeviceStatus.ACCEPTED:
        raise UnauthorizedError(f"device {device.id} is {device.status}; authenticate again")
    return device
