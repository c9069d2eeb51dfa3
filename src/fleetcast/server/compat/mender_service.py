"""The Mender device API on Fleetcast's services: auth, inventory, next, status, log, download.

Workflow of a Mender client (3.x, daemon mode):

1. ``POST auth_requests`` with ``{"id_data", "pubkey", "tenant_token"}``,
   signed by the device key (``X-MEN-Signature``: base64 of RSA-PKCS#1 v1.5
   or ECDSA over the SHA-256 of the exact body, or Ed25519 over the body).
   The identity (``id_data``) finds the device, created ``pending`` on first
   contact; it is accepted like every device (an operator, a preauthorized
   key, or a Fleetcast enrollment token given as ``TenantToken``), and then
   gets a bearer token (opaque, short-lived) in the response body.
2. ``PUT``/``PATCH inventory`` stores its attributes (``device_type`` and
   ``artifact_name`` also set the device's type and installed artifact).
3. ``deployments/next`` (v1 GET or POST, v2 POST) offers the device's next
   deployment with the Mender artifact picked for it, downloadable from a
   self-authenticating link that expires (:func:`download_token`).
4. ``status`` reports map one to one onto Fleetcast's report states and go
   through ``updates.report_status`` (idempotent; 409 once the deployment is
   aborted, which the client reads as "aborted"); ``log`` stores the
   deployment log, which the next failure report carries into the history.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.core.wire import DeviceUpdateStatus, StatusReport
from fleetcast.exceptions import ValidationError
from fleetcast.server.compat.identity import identity_hash, new_compat_device
from fleetcast.server.compat.members import stop_member
from fleetcast.server.db.models import Artifact, Deployment, DeploymentDevice, Device, utcnow
from fleetcast.server.errors import (
    BadSignatureError,
    DeploymentAbortedError,
    DevicePendingError,
    DeviceRejectedError,
    KeyMismatchError,
    NotFoundError,
    UnauthorizedError,
)
from fleetcast.server.services import updates
from fleetcast.server.services.admission import AdmissionPolicy
from fleetcast.server.services.credentials import DeviceTokenSigner, find_enrollment_token
from fleetcast.server.services.devices import add_event, apply_tags
from fleetcast.server.services.formats import ArtifactFormat, DeviceKind
from fleetcast.server.states import TERMINAL, DeploymentStatus, DeviceStatus, RolloutState

#: Device tokens of Mender devices name ``mender:<device id>``, so a token
#: never works on another protocol's API.
TOKEN_SUBJECT: Final = "mender:"  # noqa: S105  # a prefix, not a secret
MAX_BODY: Final = 1024 * 1024
MAX_ATTRIBUTES: Final = 512
MAX_LOG_LINES: Final = 100

#: Mender status → Fleetcast report state; None: a pause state, no change.
STATUSES: Final[dict[str, DeviceUpdateStatus | None]] = {
    "downloading": DeviceUpdateStatus.DOWNLOADING,
    "installing": DeviceUpdateStatus.INSTALLING,
    "rebooting": DeviceUpdateStatus.REBOOTING,
    "success": DeviceUpdateStatus.SUCCESS,
    "failure": DeviceUpdateStatus.FAILURE,
    "already-installed": DeviceUpdateStatus.ALREADY_INSTALLED,
    "pause_before_installing": None,
    "pause_before_rebooting": None,
    "pause_before_committing": None,
}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


# ----------------------------------------------------------------- keys


def load_public_key(pem: str) -> tuple[PublicKey, str, str]:
    """A device public key, its normalised PEM and its key id (sha256 of the DER).

    Raises:
        ValidationError: not an RSA (at least 2048 bits), ECDSA or Ed25519 public key.
    """
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ValidationError(f"not a PEM public key: {e}") from e
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise ValidationError("a Mender device key is RSA, ECDSA or Ed25519")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise ValidationError("RSA device keys need at least 2048 bits")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    normalised = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return key, normalised, hashlib.sha256(der).hexdigest()


def verify_signature(key: PublicKey, body: bytes, signature_b64: str | None) -> None:
    """Check ``X-MEN-Signature`` over the exact body bytes.

    Raises:
        BadSignatureError: missing, not base64, or not a signature of ``body`` by ``key``.
    """
    if not signature_b64:
        raise BadSignatureError("the X-MEN-Signature header is missing")
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, body, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(signature, body)
    except (binascii.Error, ValueError, InvalidSignature) as e:
        raise BadSignatureError(
            "X-MEN-Signature does not verify with the request's public key"
        ) from e


# ----------------------------------------------------------------- auth


def _identity(id_data: object) -> dict[str, str]:
    if not isinstance(id_data, str):
        raise ValidationError("id_data must be a JSON string")
    try:
        value = json.loads(id_data)
    except json.JSONDecodeError as e:
        raise ValidationError(f"id_data is not JSON: {e}") from e
    if not isinstance(value, dict) or not value:
        raise ValidationError("id_data must be a non-empty JSON object")
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in value.items()
    }


async def authenticate(
    session: AsyncSession,
    body: bytes,
    signature: str | None,
    policy: AdmissionPolicy,
    *,
    client: str | None = None,
) -> str:
    """Admit a Mender device; return its bearer token.

    Attempts count against the same budgets as ``POST /auth`` (per client
    address, per identity), checked before any signature work.

    Raises:
        RateLimitedError: too many attempts from this address or for this identity.
        ValidationError: malformed body or public key.
        BadSignatureError: the signature is missing or wrong.
        KeyMismatchError: the identity is known with another key.
        DevicePendingError: waiting for an operator.
        DeviceRejectedError: rejected or decommissioned.
    """
    policy.rate_limits.check_client(client)
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValidationError(f"auth request is not JSON: {e}") from e
    if not isinstance(request, dict) or not isinstance(request.get("pubkey"), str):
        raise ValidationError("auth request needs id_data and pubkey")
    identity = _identity(request.get("id_data"))
    _, lookup = identity_hash(DeviceKind.MENDER, identity)
    policy.rate_limits.check_identity(lookup)
    key, pem, keyid = load_public_key(request["pubkey"])
    verify_signature(key, body, signature)
    device = await session.scalar(select(Device).where(Device.identity_hash == lookup))
    if device is None:
        device = new_compat_device(
            DeviceKind.MENDER,
            identity,
            device_type="unknown",
            status=DeviceStatus.PENDING,
            public_key_pem=pem,
            public_key_id=keyid,
        )
        session.add(device)
        add_event(
            session, device.id, kind="admission", state=device.status, message="first contact"
        )
        try:
            await session.flush()
        except DBIntegrityError:
            await session.rollback()
            raise DevicePendingError("device is waiting for an operator to accept it") from None
    else:
        if device.status in (DeviceStatus.REJECTED, DeviceStatus.DECOMMISSIONED):
            raise DeviceRejectedError(
                f"device {device.id} is {device.status}", details={"device_id": device.id}
            )
        if device.public_key_id != keyid:
            raise KeyMismatchError(
                f"device {device.id} is known with another public key",
                details={"device_id": device.id},
            )
    await _maybe_accept(session, device, str(request.get("tenant_token") or ""))
    device.last_seen_at = utcnow()
    await session.commit()
    if device.status != DeviceStatus.ACCEPTED:
        raise DevicePendingError(
            "device is waiting for an operator to accept it", details={"device_id": device.id}
        )
    return policy.signer.issue(TOKEN_SUBJECT + device.id, policy.token_ttl)


async def _maybe_accept(session: AsyncSession, device: Device, tenant_token: str) -> None:
    reason = None
    if device.status == DeviceStatus.PREAUTHORIZED:
        reason = "preauthorized key presented"
    elif device.status == DeviceStatus.PENDING and tenant_token:
        token = await find_enrollment_token(session, tenant_token)
        if token is not None:
            token.uses += 1
            apply_tags(device, token.tags)
            reason = "enrollment token (Mender TenantToken)"
    if reason is not None:
        device.status = DeviceStatus.ACCEPTED.value
        add_event(session, device.id, kind="admission", state=device.status, message=reason)


async def device_for_token(
    session: AsyncSession, signer: DeviceTokenSigner, authorization: str | None
) -> Device:
    """The accepted Mender device a bearer token belongs to.

    Raises:
        UnauthorizedError: missing, invalid or expired token, or not a Mender device's.
        DeviceRejectedError: the device was rejected or decommissioned since.
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("this endpoint needs 'Authorization: Bearer <device token>'")
    subject = signer.verify(token.strip())
    if not subject.startswith(TOKEN_SUBJECT):
        raise UnauthorizedError("not a Mender device token")
    device = await session.get(Device, subject.removeprefix(TOKEN_SUBJECT))
    if device is None:
        raise UnauthorizedError("device token names an unknown device")
    if device.status in (DeviceStatus.REJECTED, DeviceStatus.DECOMMISSIONED):
        raise DeviceRejectedError(
            f"device {device.id} is {device.status}", details={"device_id": device.id}
        )
    if device.status != DeviceStatus.ACCEPTED:
        raise UnauthorizedError(f"device {device.id} is {device.status}; authenticate again")
    return device


# ----------------------------------------------------------------- inventory


def _parse_json(body: bytes, what: str) -> Any:
    if len(body) > MAX_BODY:
        raise ValidationError(f"{what} is larger than {MAX_BODY} bytes")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValidationError(f"{what} is not JSON: {e}") from e


def _attribute_value(value: object) -> str | list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return value if isinstance(value, str) else json.dumps(value)


def _note_artifact(device: Device, name: str) -> None:
    if name and name != device.artifact_name:
        device.artifact_name = name[:128]
        device.artifact_version = None


async def inventory(session: AsyncSession, device: Device, body: bytes, *, replace: bool) -> None:
    """Store ``[{"name", "value"}, ...]``: all of them (PUT) or merged in (PATCH).

    Raises:
        ValidationError: not a list of name/value objects, or too many.
    """
    items = _parse_json(body, "inventory")
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("name"), str) for i in items
    ):
        raise ValidationError('inventory must be a list of {"name": ..., "value": ...}')
    values = {i["name"][:128]: _attribute_value(i.get("value")) for i in items}
    attributes = values if replace else {**device.attributes, **values}
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValidationError(f"a device has at most {MAX_ATTRIBUTES} attributes")
    device.attributes = attributes
    device_type = attributes.get("device_type")
    if isinstance(device_type, str) and 0 < len(device_type) <= 128:
        device.device_type = device_type
    artifact_name = attributes.get("artifact_name")
    if isinstance(artifact_name, str):
        _note_artifact(device, artifact_name)
    device.last_seen_at = utcnow()
    device.updated_at = utcnow()
    await session.commit()


# ----------------------------------------------------------------- next and download


def provides_of(body: bytes, *, v2: bool) -> dict[str, str]:
    """What the device says it runs, from a v1 or v2 ``next`` body.

    Raises:
        ValidationError: not a JSON object.
    """
    data = _parse_json(body or b"{}", "next request")
    if v2 and isinstance(data, dict):
        data = data.get("device_provides") or {}
    if not isinstance(data, dict):
        raise ValidationError("the next request body must be a JSON object")
    return {str(k): str(v) for k, v in data.items()}


async def next_offer(
    session: AsyncSession, device: Device, provides: dict[str, str]
) -> tuple[Deployment, Artifact] | None:
    """The deployment this device should install now, with its Mender artifact, or None."""
    device_type = provides.get("device_type")
    if device_type and device_type != device.device_type and len(device_type) <= 128:
        device.device_type = device_type
    _note_artifact(device, provides.get("artifact_name", ""))
    now = utcnow()
    if device.last_seen_at is None or (now - device.last_seen_at).total_seconds() > 30:
        device.last_seen_at = now
    found = await updates.next_deployment(session, device)
    await session.commit()
    if found is None or found[1].format != ArtifactFormat.MENDER:
        return None
    return found


def download_token(key: bytes, artifact_id: str, device_id: str, expires: int) -> str:
    """The signature of a download link: HMAC-SHA256 with the device-token key."""
    message = f"mender-download:{artifact_id}:{device_id}:{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


async def check_download(
    session: AsyncSession,
    key: bytes,
    artifact_id: str,
    device_id: str,
    expires: int,
    signature: str,
    *,
    now: float | None = None,
) -> Artifact:
    """The artifact a download link names, if the link is genuine and unexpired.

    Raises:
        UnauthorizedError: forged or expired link.
        NotFoundError: the artifact is gone.
    """
    expected = download_token(key, artifact_id, device_id, expires)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise UnauthorizedError("the download link is not valid")
    if expires < (now if now is not None else time.time()):
        raise UnauthorizedError("the download link has expired; ask for the update again")
    artifact = await session.get(Artifact, artifact_id)
    if artifact is None:
        raise NotFoundError(
            f"artifact {artifact_id} not found", details={"artifact_id": artifact_id}
        )
    return artifact


# ----------------------------------------------------------------- status and log


async def _member(
    session: AsyncSession, device: Device, deployment_id: str
) -> tuple[Deployment, DeploymentDevice]:
    deployment = await session.get(Deployment, deployment_id)
    member = await session.scalar(
        select(DeploymentDevice).where(
            DeploymentDevice.deployment_id == deployment_id,
            DeploymentDevice.device_id == device.id,
        )
    )
    if deployment is None or member is None:
        raise NotFoundError(
            f"device {device.id} is not part of deployment {deployment_id}",
            details={"deployment_id": deployment_id, "device_id": device.id},
        )
    return deployment, member


def _refuse_aborted(deployment: Deployment, member: DeploymentDevice) -> None:
    if deployment.status == DeploymentStatus.ABORTED and RolloutState(member.state) not in (
        TERMINAL - {RolloutState.ABORTED}
    ):
        raise DeploymentAbortedError(
            f"deployment {deployment.id} was aborted",
            details={"deployment_id": deployment.id, "state": member.state},
        )


async def report_status(
    session: AsyncSession, device: Device, deployment_id: str, body: bytes
) -> bool:
    """Record a Mender status report; return whether the state changed.

    Raises:
        ValidationError: unknown status.
        NotFoundError: the device is not part of the deployment.
        DeploymentAbortedError: the deployment was aborted (non-final report).
        StatusConflictError: it contradicts a final state already recorded.
    """
    data = _parse_json(body, "status report")
    raw = data.get("status") if isinstance(data, dict) else None
    if not isinstance(raw, str) or raw not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}")
    status = STATUSES[raw]
    deployment, member = await _member(session, device, deployment_id)
    if status is None:  # a pause: nothing changes, but an abort still shows
        _refuse_aborted(deployment, member)
        await session.commit()
        return False
    if status == DeviceUpdateStatus.FAILURE and deployment.status == DeploymentStatus.ABORTED:
        # A Mender client answers the 409 of an aborted deployment with a
        # failure report; it stopped because of the abort, it did not fail.
        stop_member(session, device, member, "aborted; the device stopped the update")
        await session.commit()
        _refuse_aborted(deployment, member)
    substate = data.get("substate")
    message = substate if isinstance(substate, str) else ""
    log_tail = tuple(member.log_tail) if status == DeviceUpdateStatus.FAILURE else ()
    await session.commit()
    return await updates.report_status(
        session, device, deployment_id, StatusReport(status, None, message, log_tail)
    )


async def upload_log(
    session: AsyncSession, device: Device, deployment_id: str, body: bytes
) -> None:
    """Keep the deployment log (its last lines) for the device's failure report.

    Raises:
        ValidationError: not ``{"messages": [...]}``.
        NotFoundError: the device is not part of the deployment.
        DeploymentAbortedError: the deployment was aborted and the device had not finished.
    """
    data = _parse_json(body, "deployment log")
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list):
        raise ValidationError('the log must be {"messages": [...]}')
    lines = []
    for entry in messages[-MAX_LOG_LINES:]:
        if isinstance(entry, dict):
            parts = (entry.get("timestamp"), entry.get("level"), entry.get("message"))
            lines.append(" ".join(str(p) for p in parts if p is not None)[:2000])
        else:
            lines.append(str(entry)[:2000])
    deployment, member = await _member(session, device, deployment_id)
    _refuse_aborted(deployment, member)
    if member.log_tail != lines:
        member.log_tail = lines
        # The client sends its log after the failure report: keep it in the history too.
        add_event(
            session,
            device.id,
            kind="status",
            state=member.state,
            message="deployment log",
            deployment_id=deployment_id,
            log_tail=lines,
        )
    await session.commit()
