"""The one exception tree of Fleetcast.

Roots are chosen by what the caller must do::

    FleetcastError
    ├── InvalidDataError          untrusted or malformed data: never install, never retry
    │   ├── ArtifactFormatError       not a well-formed artifact (truncated, bad tar, bad zstd)
    │   ├── SignatureError            unsigned, wrongly signed or tampered manifest
    │   ├── IntegrityError            payload length or hash differs from the signed manifest
    │   ├── IncompatibleError         wrong device type, unmet ``depends``
    │   ├── DowngradeError            older version and the deployment does not allow it
    │   ├── DeltaError                a delta cannot be used (malformed, wrong source, bad
    │   │                             result, unknown engine): install the full artifact
    │   └── ValidationError           a wire object or config field fails validation
    ├── TransportError            network or server trouble: retry with backoff
    │   └── ServerResponseError       the server answered with an unexpected status
    ├── DeviceStateError          the device itself cannot proceed (slot, bootloader, journal)
    ├── ApiError                  a management-API call was refused (carries status and code)
    └── UsageError                misuse: a programming or configuration error

Every error carries enough context (device id, artifact, version) to be
understood without a traceback.
"""

from __future__ import annotations


class FleetcastError(Exception):
    """Root of all Fleetcast errors."""


class InvalidDataError(FleetcastError):
    """Data from outside cannot be trusted or parsed: never install it, never retry."""


class ArtifactFormatError(InvalidDataError):
    """The artifact is not well formed (truncated, not a tar, bad compression)."""


class SignatureError(InvalidDataError):
    """The manifest is unsigned, signed by an untrusted key, or its signature is invalid."""


class IntegrityError(InvalidDataError):
    """A payload's length or hash differs from what the signed manifest states."""


class IncompatibleError(InvalidDataError):
    """The artifact does not fit this device (device type, installed version)."""


class DowngradeError(InvalidDataError):
    """The artifact is older than the installed version and downgrades are not allowed."""


class DeltaError(InvalidDataError):
    """A delta cannot be applied: malformed, made for another source, over a bound,
    of an engine this device lacks, or its result differs from the signed manifest.

    Deltas are unsigned, untrusted input: the only right reaction is to discard
    what was written and install the full, signed artifact instead.
    """


class ValidationError(InvalidDataError):
    """A wire object, manifest field or configuration value is invalid."""


class TransportError(FleetcastError):
    """The network or the server failed; the operation may be retried with backoff."""


class ServerResponseError(TransportError):
    """The server answered with a status the client did not expect."""

    def __init__(self, message: str, *, status_code: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class DeviceStateError(FleetcastError):
    """The device cannot proceed: slot, bootloader environment or journal trouble."""


class ApiError(FleetcastError):
    """A management-API request was refused; ``status_code`` and ``code`` say why."""

    def __init__(self, message: str, *, status_code: int, code: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class UsageError(FleetcastError):
    """Fleetcast was used wrongly (bad configuration, impossible call order)."""


__all__ = [
    "ApiError",
    "ArtifactFormatError",
    "DeltaError",
    "DeviceStateError",
    "DowngradeError",
    "FleetcastError",
    "IncompatibleError",
    "IntegrityError",
    "InvalidDataError",
    "ServerResponseError",
    "SignatureError",
    "TransportError",
    "UsageError",
    "ValidationError",
]
