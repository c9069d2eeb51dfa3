"""Nonces and signed version reports (ADR 0008), so a device's word cannot be replayed.

1. The device asks for a nonce (``POST /api/device/v1/tuf/nonce``): 16 random
   bytes, the device's only valid one (a new one replaces it), good for
   :data:`NONCE_LIFETIME`.
2. It signs a version report with its registered ed25519 key over the
   canonical JSON of ``signed`` and sends it. The server checks the device,
   the signature, then consumes the nonce: each nonce proves one report.
3. The accepted report is kept (the device view shows it) and its nonce is
   echoed in the device's director metadata, so the device knows the
   director answered *this* report and not an old one.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.core.canonical import canonical_json
from fleetcast.core.signing import Signature, public_key_from_pem, verify
from fleetcast.exceptions import InvalidDataError, ValidationError
from fleetcast.server.db.models import Device
from fleetcast.server.db.trust_models import TufNonce, TufVersionReport
from fleetcast.server.errors import StaleNonceError, VersionReportInvalidError

#: How long an issued nonce may be used.
NONCE_LIFETIME: Final = dt.timedelta(hours=1)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: Largest time and release counter stored (a signed 64-bit column).
_MAX_INT: Final = 2**63 - 1


@dataclass(frozen=True)
class VersionReport:
    """A device's signed statement of what it runs; ``signed`` kept as sent (it is signed)."""

    device_id: str
    nonce: str
    time: int
    target: str | None
    sha256: str | None
    release_counter: int
    signed: dict[str, Any]
    signatures: list[Signature]

    @classmethod
    def from_dict(cls, data: object) -> VersionReport:
        """Raises: ValidationError: not the shape of ADR 0008's version report."""
        if not isinstance(data, dict) or not isinstance(data.get("signed"), dict):
            raise ValidationError("a version report is {'signed': {...}, 'signatures': [...]}")
        signed: dict[str, Any] = data["signed"]
        raw_signatures = data.get("signatures")
        if not isinstance(raw_signatures, list) or not raw_signatures:
            raise ValidationError("a version report needs a non-empty 'signatures' list")
        installed = signed.get("installed")
        if not isinstance(installed, dict):
            raise ValidationError("signed.installed must be an object")
        device_id, nonce, time = signed.get("device_id"), signed.get("nonce"), signed.get("time")
        target, sha256 = installed.get("target"), installed.get("sha256")
        counter = installed.get("release_counter", 0)
        if not isinstance(device_id, str) or not isinstance(nonce, str) or not nonce:
            raise ValidationError("signed.device_id and signed.nonce must be strings")
        if not _is_int(time) or not _is_int(counter) or not (0 <= time <= _MAX_INT):
            raise ValidationError("signed.time and installed.release_counter must be integers")
        if not 0 <= counter <= _MAX_INT:
            raise ValidationError(f"installed.release_counter must be within 0..{_MAX_INT}")
        if target is not None and (not isinstance(target, str) or len(target) > 300):
            raise ValidationError("installed.target must be a target path or null")
        if sha256 is not None and (not isinstance(sha256, str) or not _HEX64.match(sha256)):
            raise ValidationError("installed.sha256 must be 64 lowercase hex digits or null")
        return cls(
            device_id=device_id,
            nonce=nonce,
            time=time,
            target=target,
            sha256=sha256,
            release_counter=counter,
            signed=signed,
            signatures=[Signature.from_dict(s) for s in raw_signatures],
        )

    def to_dict(self) -> dict[str, Any]:
        return {"signed": self.signed, "signatures": [s.to_dict() for s in self.signatures]}


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


async def _lock_device(session: AsyncSession, device_id: str) -> None:
    # Serialises this device's nonce and report handling across processes.
    await session.execute(select(Device.id).where(Device.id == device_id).with_for_update())


async def issue_nonce(session: AsyncSession, device: Device, *, now: dt.datetime) -> str:
    """A new single-use nonce for ``device``, replacing its previous one; commits."""
    nonce = secrets.token_hex(16)
    await _lock_device(session, device.id)
    row = await session.get(TufNonce, device.id)
    if row is None:
        session.add(TufNonce(device_id=device.id, nonce=nonce, issued_at=now))
    else:
        row.nonce, row.issued_at = nonce, now
    await session.commit()
    return nonce


async def accept_report(
    session: AsyncSession, device: Device, body: object, *, now: dt.datetime
) -> TufVersionReport:
    """Verify a version report, consume its nonce and keep it as the device's last; commits.

    Raises:
        VersionReportInvalidError: malformed, for another device, or its
            signature does not verify with the device's registered key.
        StaleNonceError: the nonce is not the device's current one (replayed,
            used already, replaced by a newer one, or expired).
    """
    device_id = device.id  # a rollback below expires the row
    try:
        report = VersionReport.from_dict(body)
        message = canonical_json(report.signed)
    except ValidationError as e:
        raise VersionReportInvalidError(f"malformed version report: {e}") from e
    context = {"device_id": device_id}
    if report.device_id != device_id:
        raise VersionReportInvalidError(
            f"the report is about device {report.device_id}, the token is device {device_id}",
            details={**context, "report_device_id": report.device_id},
        )
    try:
        verify(
            message,
            report.signatures,
            [public_key_from_pem(device.public_key)],
            what="version report",
        )
    except InvalidDataError as e:
        raise VersionReportInvalidError(
            f"version report of device {device_id}: {e}", details=context
        ) from e
    await _lock_device(session, device_id)
    consumed = await session.execute(
        delete(TufNonce)
        .where(
            TufNonce.device_id == device_id,
            TufNonce.nonce == report.nonce,
            TufNonce.issued_at > now - NONCE_LIFETIME,
        )
        .returning(TufNonce.nonce)
    )
    if consumed.first() is None:
        await session.rollback()
        raise StaleNonceError(
            f"nonce {report.nonce[:16]} is not the current nonce of device {device_id}: "
            "ask for a new one (POST /api/device/v1/tuf/nonce)",
            details=context,
        )
    row = await session.get(TufVersionReport, device_id)
    if row is None:
        row = TufVersionReport(device_id=device_id)
        session.add(row)
    row.nonce = report.nonce
    row.report = report.to_dict()
    row.installed_target = report.target
    row.installed_sha256 = report.sha256
    row.release_counter = report.release_counter
    row.reported_time = report.time
    row.received_at = now
    await session.commit()
    return row


async def last_report(session: AsyncSession, device_id: str) -> TufVersionReport | None:
    """The device's last accepted version report, or None."""
    return await session.get(TufVersionReport, device_id, populate_existing=True)


__all__ = ["NONCE_LIFETIME", "VersionReport", "accept_report", "issue_nonce", "last_report"]
