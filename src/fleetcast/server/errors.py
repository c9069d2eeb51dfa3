"""The server's domain errors, each with the HTTP status and stable ``code`` it maps to.

They extend :class:`fleetcast.exceptions.ApiError` (a refused request), so the
tree drawn in ``fleetcast/exceptions.py`` still holds::

    ApiError
    └── ServerError                    base: status_code, code, details
        ├── NotFoundError              404 not_found
        ├── ConflictError              409 conflict
        │   ├── StatusConflictError        409 status_conflict
        │   ├── DeploymentAbortedError     409 deployment_aborted
        │   ├── StaleNonceError            409 stale_nonce
        │   └── ArtifactNotReleasedError   409 artifact_not_released
        ├── GoneError                  410 gone (feedback on a closed DDI action)
        ├── RequestInvalidError        422 validation_error
        ├── InvalidArtifactError       422 invalid_artifact
        ├── TufMetadataInvalidError    422 tuf_metadata_invalid
        ├── VersionReportInvalidError  422 invalid_version_report
        ├── TooLargeError              413 too_large
        ├── UnauthorizedError          401 unauthorized
        │   ├── DevicePendingError         401 device_pending
        │   ├── BadSignatureError          401 bad_signature
        │   ├── KeyMismatchError           401 key_mismatch
        │   └── StaleRequestError          401 stale_request
        ├── ForbiddenError             403 forbidden
        ├── DeviceRejectedError        403 device_rejected
        ├── RateLimitedError           429 rate_limited (Retry-After)
        ├── StorageUnavailableError    503 storage_unavailable
        └── InsufficientStorageError   507 insufficient_storage

Service code raises these (never ``HTTPException``); the one handler in
``fleetcast.server.api.errors`` turns them into the JSON error shape.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fleetcast.exceptions import ApiError


class ServerError(ApiError):
    """A request the server refuses; subclasses fix ``status_code`` and ``code``."""

    default_status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, status_code=self.default_status, code=self.default_code)
        self.details = details
        #: Extra response headers (``Retry-After``).
        self.headers: dict[str, str] = {}


class NotFoundError(ServerError):
    """The addressed object does not exist (or is not visible to the caller)."""

    default_status, default_code = 404, "not_found"


class ConflictError(ServerError):
    """The request contradicts the current state (duplicate, still in use, finished)."""

    default_status, default_code = 409, "conflict"


class StatusConflictError(ConflictError):
    """A device report contradicts a final state it already reported."""

    default_code = "status_conflict"


class DeploymentAbortedError(ConflictError):
    """The deployment was aborted; the device should stop unless it already committed."""

    default_code = "deployment_aborted"


class StaleNonceError(ConflictError):
    """A version report's nonce is not the device's current one (a replay, or used already)."""

    default_code = "stale_nonce"


class ArtifactNotReleasedError(ConflictError):
    """The image repository is set up and the artifact has no target in it (ADR 0008)."""

    default_code = "artifact_not_released"


class GoneError(ServerError):
    """The addressed thing is finished for good (a closed hawkBit DDI action)."""

    default_status, default_code = 410, "gone"


class RequestInvalidError(ServerError):
    """The request is well-formed JSON but its content is invalid (bad phases, empty target)."""

    default_status, default_code = 422, "validation_error"


class InvalidArtifactError(ServerError):
    """An uploaded artifact is malformed, truncated, tampered or wrongly signed."""

    default_status, default_code = 422, "invalid_artifact"


class TufMetadataInvalidError(ServerError):
    """Uploaded TUF metadata is malformed, under-signed, expired, or out of order."""

    default_status, default_code = 422, "tuf_metadata_invalid"


class VersionReportInvalidError(ServerError):
    """A device's version report is malformed, for another device, or wrongly signed."""

    default_status, default_code = 422, "invalid_version_report"


class TooLargeError(ServerError):
    """An upload exceeds the configured size limit."""

    default_status, default_code = 413, "too_large"


class UnauthorizedError(ServerError):
    """No valid credentials: the caller must (re-)authenticate."""

    default_status, default_code = 401, "unauthorized"


class DevicePendingError(UnauthorizedError):
    """The device is known but waits for an operator to accept it."""

    default_code = "device_pending"


class BadSignatureError(UnauthorizedError):
    """The auth request signature is missing or does not verify with its public key."""

    default_code = "bad_signature"


class KeyMismatchError(UnauthorizedError):
    """The identity is known with another public key."""

    default_code = "key_mismatch"


class StaleRequestError(UnauthorizedError):
    """The auth request timestamp is too far from the server clock (replay guard)."""

    default_code = "stale_request"


class ForbiddenError(ServerError):
    """Valid credentials whose scope does not allow the request (a read-only token writing)."""

    default_status, default_code = 403, "forbidden"


class DeviceRejectedError(ServerError):
    """The device was rejected or decommissioned: it gets nothing."""

    default_status, default_code = 403, "device_rejected"


class RateLimitedError(ServerError):
    """Too many attempts (device authentication); ``Retry-After`` says when to try again."""

    default_status, default_code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class StorageUnavailableError(ServerError):
    """The blob store (S3) cannot be reached or refused the operation; try again later."""

    default_status, default_code = 503, "storage_unavailable"


class InsufficientStorageError(ServerError):
    """The server's disk is full: the upload was not stored (nothing half-written is kept)."""

    default_status, default_code = 507, "insufficient_storage"


__all__ = [
    "ArtifactNotReleasedError",
    "BadSignatureError",
    "ConflictError",
    "DeploymentAbortedError",
    "DevicePendingError",
    "DeviceRejectedError",
    "ForbiddenError",
    "GoneError",
    "InsufficientStorageError",
    "InvalidArtifactError",
    "KeyMismatchError",
    "NotFoundError",
    "RateLimitedError",
    "RequestInvalidError",
    "ServerError",
    "StaleNonceError",
    "StaleRequestError",
    "StatusConflictError",
    "StorageUnavailableError",
    "TooLargeError",
    "TufMetadataInvalidError",
    "UnauthorizedError",
    "VersionReportInvalidError",
]
