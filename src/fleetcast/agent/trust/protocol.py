"""What the agent and its TUF child process say to each other: one JSON object each way.

The agent writes a :class:`TrustRequest` to the child's stdin; the child
prints one :class:`TrustVerdict` on stdout: the verified image target (what
both repositories agree this device must install), or a typed
:class:`Refusal`. Both sides bound what they read (:data:`MAX_MESSAGE`).

This module is light on purpose (standard library and ``fleetcast.exceptions``
only): the agent's own process imports it, never ``tuf``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from fleetcast.exceptions import (
    DeviceStateError,
    DowngradeError,
    FleetcastError,
    IncompatibleError,
    IntegrityError,
    SignatureError,
    TransportError,
    UsageError,
    ValidationError,
)

PROTOCOL_FORMAT: Final = 1
#: Largest request or verdict either side reads, bytes. A verdict holds one
#: target's custom object (a few hundred bytes in practice).
MAX_MESSAGE: Final = 256 * 1024

_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")

#: Refusal kinds and the exception the agent raises for each. The
#: ``InvalidDataError`` family means "never install, never retry this offer";
#: ``TransportError`` means "the repository could not be reached: retry".
REFUSALS: Final[dict[str, type[FleetcastError]]] = {
    # Metadata that TUF does not trust: bad or missing signatures (below
    # threshold), expired, rolled back, wrong length or hash, endless data.
    "untrusted": SignatureError,
    # The repositories or the offer disagree on length or hashes.
    "mismatch": IntegrityError,
    # The director does not direct this device to this offer (no target,
    # several, another device, another nonce, another deployment), or the
    # image repository does not hold the director's target.
    "not-directed": IncompatibleError,
    # The image is for another device type.
    "incompatible": IncompatibleError,
    # An older release than the one installed.
    "downgrade": DowngradeError,
    # Network or server trouble: retried with backoff.
    "transport": TransportError,
    # The device cannot store metadata.
    "state": DeviceStateError,
    # A configuration error (a root file that cannot be read).
    "usage": UsageError,
}


def _string(data: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationError(f"trust message: {key!r} must be a non-empty string")
    return value


@dataclass(frozen=True)
class TrustRequest:
    """What the child needs to refresh both repositories for one device.

    Attributes:
        server_url: the Fleetcast server (the repositories are under
            ``/api/device/v1/tuf/{image,director}/``).
        token: a valid bearer token (the child never sees the device key).
        ca_bundle: the pinned CA bundle (``None``: the system trust store).
        state_dir: the agent's state directory (metadata in ``tuf/{image,director}``).
        image_root: the shipped initial root of the image repository.
        director_root: the shipped initial root of the director repository.
        device_id: this device's id; the director's metadata must name it.
        nonce: the nonce of the version report just accepted; the director's
            metadata must carry it (no replay of older director metadata).
        deployment_id: the offer's deployment; ``None`` for an idle refresh.
        timeout: seconds for one HTTP request.
    """

    server_url: str
    token: str
    ca_bundle: str | None
    state_dir: str
    image_root: str
    director_root: str
    device_id: str
    nonce: str
    deployment_id: str | None = None
    timeout: float = 30.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROTOCOL_FORMAT,
            "server_url": self.server_url,
            "token": self.token,
            "ca_bundle": self.ca_bundle,
            "state_dir": self.state_dir,
            "image_root": self.image_root,
            "director_root": self.director_root,
            "device_id": self.device_id,
            "nonce": self.nonce,
            "deployment_id": self.deployment_id,
            "timeout": self.timeout,
        }

    @classmethod
    def from_dict(cls, data: object) -> TrustRequest:
        """Raises: ValidationError: not a request of this format."""
        if not isinstance(data, dict) or data.get("format") != PROTOCOL_FORMAT:
            raise ValidationError(f"trust request must be an object of format {PROTOCOL_FORMAT}")
        timeout = data.get("timeout", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValidationError("trust request: 'timeout' must be a positive number")
        return cls(
            server_url=str(_string(data, "server_url")),
            token=str(_string(data, "token")),
            ca_bundle=_string(data, "ca_bundle", optional=True),
            state_dir=str(_string(data, "state_dir")),
            image_root=str(_string(data, "image_root")),
            director_root=str(_string(data, "director_root")),
            device_id=str(_string(data, "device_id")),
            nonce=str(_string(data, "nonce")),
            deployment_id=_string(data, "deployment_id", optional=True),
            timeout=float(timeout),
        )


@dataclass(frozen=True)
class VerifiedTarget:
    """An image target both repositories agree this device must install.

    Attributes:
        path: the target path (``<name>/<version>.fca``).
        length: the artifact's length in bytes (image and director agree).
        sha256: the artifact's sha256 (image and director agree).
        custom: the image target's ``custom`` (signed offline by the vendor).
        deployment_id: the director's ``custom.fleetcast.deployment_id``.
        allow_downgrade: the director's ``custom.fleetcast.allow_downgrade``.
    """

    path: str
    length: int
    sha256: str
    custom: dict[str, Any] = field(default_factory=dict)
    deployment_id: str | None = None
    allow_downgrade: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "length": self.length,
            "sha256": self.sha256,
            "custom": self.custom,
            "deployment_id": self.deployment_id,
            "allow_downgrade": self.allow_downgrade,
        }

    @classmethod
    def from_dict(cls, data: object) -> VerifiedTarget:
        """Raises: ValidationError: not a verified target."""
        if not isinstance(data, dict):
            raise ValidationError("trust verdict: target must be an object")
        length, sha256, custom = data.get("length"), data.get("sha256"), data.get("custom", {})
        if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
            raise ValidationError("trust verdict: target length must be a positive integer")
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise ValidationError("trust verdict: target sha256 must be 64 hex digits")
        if not isinstance(custom, dict):
            raise ValidationError("trust verdict: target custom must be an object")
        return cls(
            path=str(_string(data, "path")),
            length=length,
            sha256=sha256,
            custom=custom,
            deployment_id=_string(data, "deployment_id", optional=True),
            allow_downgrade=data.get("allow_downgrade") is True,
        )


@dataclass(frozen=True)
class Refusal:
    """Why the child would not vouch for the offer: a kind of :data:`REFUSALS` and a message."""

    kind: str
    message: str

    def error(self) -> FleetcastError:
        """The agent's exception for this refusal."""
        return REFUSALS.get(self.kind, DeviceStateError)(f"TUF: {self.message}")


@dataclass(frozen=True)
class TrustVerdict:
    """The child's answer: ``target`` (``None``: the director directs nothing) or ``refusal``."""

    target: VerifiedTarget | None = None
    refusal: Refusal | None = None

    def to_dict(self) -> dict[str, Any]:
        refusal = self.refusal
        return {
            "format": PROTOCOL_FORMAT,
            "target": None if self.target is None else self.target.to_dict(),
            "refusal": None
            if refusal is None
            else {"kind": refusal.kind, "message": refusal.message},
        }

    @classmethod
    def from_dict(cls, data: object) -> TrustVerdict:
        """Raises: ValidationError: not a verdict of this format."""
        if not isinstance(data, dict) or data.get("format") != PROTOCOL_FORMAT:
            raise ValidationError(f"trust verdict must be an object of format {PROTOCOL_FORMAT}")
        refusal = data.get("refusal")
        if refusal is not None:
            if not isinstance(refusal, dict) or refusal.get("kind") not in REFUSALS:
                raise ValidationError("trust verdict: refusal needs a known 'kind'")
            return cls(refusal=Refusal(str(refusal["kind"]), str(refusal.get("message", ""))))
        target = data.get("target")
        return cls(target=None if target is None else VerifiedTarget.from_dict(target))


__all__ = [
    "MAX_MESSAGE",
    "PROTOCOL_FORMAT",
    "REFUSALS",
    "Refusal",
    "TrustRequest",
    "TrustVerdict",
    "VerifiedTarget",
]
