"""Typed objects of the native device API (``/api/device/v1``), shared by agent and server.

Each class validates in ``from_dict`` and serialises with ``to_dict``; the
HTTP contract is written out in ``docs/device-api.md``. The server keeps its
own pydantic schemas for OpenAPI and converts at its boundary; these classes
are what the agent speaks and what the tests hold both sides to.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final

from fleetcast.core.envelope import WrappedKey
from fleetcast.core.manifest import SignedManifest
from fleetcast.exceptions import ValidationError

#: The largest report sequence number (the server stores it as a signed 64-bit integer).
MAX_REPORT_SEQ: Final = 2**63 - 1


class DeviceUpdateStatus(enum.StrEnum):
    """What a device reports about one deployment (the device's side of the state machine)."""

    DOWNLOADING = "downloading"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    SUCCESS = "success"
    FAILURE = "failure"
    ALREADY_INSTALLED = "already-installed"

    @property
    def terminal(self) -> bool:
        return self in (self.SUCCESS, self.FAILURE, self.ALREADY_INSTALLED)


def _str_map(value: object, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValidationError(f"{what} must be an object of strings")
    return dict(value)


def _flag(data: dict[str, Any], key: str, what: str) -> bool:
    """An optional boolean (absent or null: false); never truthiness ("false" is not true)."""
    value = data.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationError(f"{what}: {key!r} must be true or false")
    return value


def _opt_str(data: dict[str, Any], key: str, what: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"{what}: {key!r} must be a string or null")
    return value


@dataclass(frozen=True)
class AuthRequest:
    """First contact: identity, device type and public key, signed by the device key.

    The body is sent as-is and its exact bytes are signed (header
    ``X-Fleetcast-Signature``, hex ed25519), proving possession of the key.
    """

    identity: dict[str, str]
    device_type: str
    public_key: str
    timestamp: int
    enrollment_token: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "identity": dict(self.identity),
            "device_type": self.device_type,
            "public_key": self.public_key,
            "timestamp": self.timestamp,
        }
        if self.enrollment_token is not None:
            data["enrollment_token"] = self.enrollment_token
        return data

    @classmethod
    def from_dict(cls, data: object) -> AuthRequest:
        """Raises: ValidationError: a field is missing or invalid."""
        if not isinstance(data, dict):
            raise ValidationError("auth request must be an object")
        identity = _str_map(data.get("identity"), "identity")
        if not identity:
            raise ValidationError("identity must have at least one attribute")
        device_type, public_key, ts = (
            data.get("device_type"),
            data.get("public_key"),
            data.get("timestamp"),
        )
        if not isinstance(device_type, str) or not device_type:
            raise ValidationError("device_type must be a non-empty string")
        if not isinstance(public_key, str):
            raise ValidationError("public_key must be a PEM string")
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise ValidationError("timestamp must be an integer (unix seconds)")
        return cls(
            identity, device_type, public_key, ts, _opt_str(data, "enrollment_token", "auth")
        )


@dataclass(frozen=True)
class AuthResponse:
    device_id: str
    token: str
    expires_in: int

    def to_dict(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "token": self.token, "expires_in": self.expires_in}

    @classmethod
    def from_dict(cls, data: object) -> AuthResponse:
        """Raises: ValidationError: a field is missing or invalid."""
        if not isinstance(data, dict):
            raise ValidationError("auth response must be an object")
        device_id, token, expires = data.get("device_id"), data.get("token"), data.get("expires_in")
        if not isinstance(device_id, str) or not isinstance(token, str):
            raise ValidationError("auth response needs string 'device_id' and 'token'")
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise ValidationError("auth response needs integer 'expires_in'")
        return cls(device_id, token, expires)


@dataclass(frozen=True)
class Inventory:
    """What the device has: type, installed artifact and free-form attributes."""

    device_type: str
    artifact_name: str | None
    artifact_version: str | None
    attributes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_type": self.device_type,
            "artifact_name": self.artifact_name,
            "artifact_version": self.artifact_version,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_dict(cls, data: object) -> Inventory:
        """Raises: ValidationError: a field is missing or invalid."""
        if not isinstance(data, dict):
            raise ValidationError("inventory must be an object")
        device_type = data.get("device_type")
        if not isinstance(device_type, str) or not device_type:
            raise ValidationError("inventory: device_type must be a non-empty string")
        return cls(
            device_type,
            _opt_str(data, "artifact_name", "inventory"),
            _opt_str(data, "artifact_version", "inventory"),
            _str_map(data.get("attributes", {}), "inventory attributes"),
        )


_SHA256_HEX = frozenset("0123456789abcdef")


def _sha256(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _SHA256_HEX:
        raise ValidationError(f"{what} must be 64 lowercase hex digits")
    return value


def _positive(value: object, what: str, *, zero: bool = False) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if zero else 1):
        raise ValidationError(f"{what} must be a {'non-negative' if zero else 'positive'} integer")
    return value


@dataclass(frozen=True)
class DeltaOffer:
    """A delta the device may use instead of downloading the full image.

    Unsigned and untrusted: the device uses it only when its running slot
    holds ``source_size`` bytes hashing to ``source_sha256`` (the image of
    ``source_version``), reads at most ``size`` bytes from ``url``, and
    accepts the result only if it matches the signed manifest's ``size`` and
    ``sha256``; otherwise it downloads the full artifact.
    """

    url: str
    size: int
    sha256: str
    engine: str
    source_version: str
    source_size: int
    source_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "size": self.size,
            "sha256": self.sha256,
            "engine": self.engine,
            "source_version": self.source_version,
            "source_size": self.source_size,
            "source_sha256": self.source_sha256,
        }

    @classmethod
    def from_dict(cls, data: object) -> DeltaOffer:
        """Raises: ValidationError: a field is missing or invalid."""
        if not isinstance(data, dict):
            raise ValidationError("delta offer must be an object")
        strings = {k: data.get(k) for k in ("url", "engine", "source_version")}
        for key, value in strings.items():
            if not isinstance(value, str) or not value:
                raise ValidationError(f"delta offer: {key!r} must be a non-empty string")
        return cls(
            url=str(strings["url"]),
            size=_positive(data.get("size"), "delta offer: 'size'"),
            sha256=_sha256(data.get("sha256"), "delta offer: 'sha256'"),
            engine=str(strings["engine"]),
            source_version=str(strings["source_version"]),
            source_size=_positive(data.get("source_size"), "delta offer: 'source_size'", zero=True),
            source_sha256=_sha256(data.get("source_sha256"), "delta offer: 'source_sha256'"),
        )


@dataclass(frozen=True)
class UpdateOffer:
    """The device's next update: which deployment, which artifact, where to get it.

    ``delta`` (optional, issue 4) names a delta from the device's installed
    image; agents that do not know it ignore it and download the artifact.

    ``wrapped_key`` (optional, ADR 0008): the encrypted artifact's content key
    wrapped for this device's X25519 key. Unsigned: the device checks the key
    it unwraps against the manifest's signed ``key_id``.
    """

    deployment_id: str
    artifact_id: str
    artifact_size: int
    artifact_sha256: str
    download_url: str
    manifest: SignedManifest
    allow_downgrade: bool = False
    delta: DeltaOffer | None = None
    wrapped_key: WrappedKey | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "deployment_id": self.deployment_id,
            "artifact_id": self.artifact_id,
            "artifact_size": self.artifact_size,
            "artifact_sha256": self.artifact_sha256,
            "download_url": self.download_url,
            "manifest": self.manifest.to_dict(),
            "allow_downgrade": self.allow_downgrade,
        }
        if self.delta is not None:
            data["delta"] = self.delta.to_dict()
        if self.wrapped_key is not None:
            data["wrapped_key"] = self.wrapped_key.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: object) -> UpdateOffer:
        """Raises: ValidationError: a field is missing or invalid."""
        if not isinstance(data, dict):
            raise ValidationError("update offer must be an object")
        strings = {
            k: data.get(k)
            for k in ("deployment_id", "artifact_id", "artifact_sha256", "download_url")
        }
        for key, value in strings.items():
            if not isinstance(value, str) or not value:
                raise ValidationError(f"update offer: {key!r} must be a non-empty string")
        size = data.get("artifact_size")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValidationError("update offer: 'artifact_size' must be a positive integer")
        delta = data.get("delta")
        wrapped_key = data.get("wrapped_key")
        return cls(
            deployment_id=str(strings["deployment_id"]),
            artifact_id=str(strings["artifact_id"]),
            artifact_size=size,
            artifact_sha256=str(strings["artifact_sha256"]),
            download_url=str(strings["download_url"]),
            manifest=SignedManifest.from_dict(data.get("manifest")),
            allow_downgrade=_flag(data, "allow_downgrade", "update offer"),
            delta=None if delta is None else DeltaOffer.from_dict(delta),
            wrapped_key=None if wrapped_key is None else WrappedKey.from_dict(wrapped_key),
        )


@dataclass(frozen=True)
class StatusReport:
    """One step of a device's progress through a deployment.

    ``seq`` (optional) orders a device's reports: the agent numbers each one
    from a counter kept in its journal, so it only ever grows. The server
    ignores a report whose ``seq`` is not above the highest it has recorded
    for that device in that deployment: a request delivered late (its client
    gave up, retried and moved on) cannot overwrite a newer state. Without it
    (older agents, the DDI and Mender APIs) reports are taken in arrival order.
    """

    status: DeviceUpdateStatus
    progress: int | None = None
    message: str = ""
    log_tail: tuple[str, ...] = ()
    rolled_back: bool = False
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": self.status.value,
            "progress": self.progress,
            "message": self.message,
            "log_tail": list(self.log_tail),
            "rolled_back": self.rolled_back,
        }
        if self.seq is not None:
            data["seq"] = self.seq
        return data

    @classmethod
    def from_dict(cls, data: object) -> StatusReport:
        """Raises: ValidationError: a field is missing or invalid."""
        if not isinstance(data, dict):
            raise ValidationError("status report must be an object")
        try:
            status = DeviceUpdateStatus(str(data.get("status")))
        except ValueError as e:
            allowed = ", ".join(s.value for s in DeviceUpdateStatus)
            raise ValidationError(f"status must be one of {allowed}") from e
        progress = data.get("progress")
        if progress is not None and (
            not isinstance(progress, int) or isinstance(progress, bool) or not 0 <= progress <= 100
        ):
            raise ValidationError("progress must be an integer 0..100 or null")
        message = data.get("message", "")
        log_tail = data.get("log_tail", [])
        if not isinstance(message, str):
            raise ValidationError("message must be a string")
        if not isinstance(log_tail, list) or not all(isinstance(x, str) for x in log_tail):
            raise ValidationError("log_tail must be a list of strings")
        rolled_back = _flag(data, "rolled_back", "status report")
        seq = data.get("seq")
        if seq is not None and (
            not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_REPORT_SEQ
        ):
            raise ValidationError(f"seq must be an integer 0..{MAX_REPORT_SEQ} or null")
        return cls(status, progress, message, tuple(log_tail), rolled_back, seq)
