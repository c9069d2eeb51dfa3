"""Pydantic request and response schemas (the OpenAPI surface).

They are separate from the ORM rows and from the wire objects in
``fleetcast.core.wire``: device requests are validated here for a precise
422, then converted to wire objects for the services.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleetcast.core.wire import MAX_REPORT_SEQ
from fleetcast.server.api.trust_schemas import VersionReportOut

DeviceStatusName = Literal["pending", "accepted", "preauthorized", "rejected", "decommissioned"]
DeploymentStatusName = Literal["running", "paused", "completed", "aborted"]
ReportStatusName = Literal[
    "downloading", "installing", "rebooting", "success", "failure", "already-installed"
]
DeviceKindName = Literal["native", "ddi", "mender"]
ArtifactFormatName = Literal["fleetcast", "file", "mender"]
TokenScopeName = Literal["read-only", "operator", "admin"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------- errors


class ErrorBody(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    """The one error shape of every endpoint."""

    error: ErrorBody


# ----------------------------------------------------------------- device API


class AuthRequestIn(BaseModel):
    """``POST /auth`` body; its exact bytes are signed (header ``X-Fleetcast-Signature``)."""

    identity: dict[str, str] = Field(min_length=1)
    device_type: str = Field(min_length=1, max_length=128)
    public_key: str = Field(min_length=1, max_length=4096)
    timestamp: int
    enrollment_token: str | None = None


class AuthResponseOut(BaseModel):
    device_id: str
    token: str
    expires_in: int


class InventoryIn(BaseModel):
    device_type: str = Field(min_length=1, max_length=128)
    artifact_name: str | None = Field(default=None, max_length=128)
    artifact_version: str | None = Field(default=None, max_length=128)
    attributes: dict[str, str] = Field(default_factory=dict)


class StatusReportIn(BaseModel):
    status: ReportStatusName
    progress: int | None = Field(default=None, ge=0, le=100)
    message: str = ""
    log_tail: list[str] = Field(default_factory=list)
    rolled_back: bool = False
    seq: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=MAX_REPORT_SEQ,
        description="The device's report sequence number; a report whose seq is not above "
        "the highest recorded for this device in this deployment is ignored (204).",
    )


class SignedManifestOut(BaseModel):
    signed: dict[str, Any]
    signatures: list[dict[str, str]]


class WrappedKeyOut(BaseModel):
    """A content key wrapped for one X25519 key (ADR 0008; hex fields)."""

    recipient: str = Field(description="Hex sha256 of the recipient's raw X25519 public key.")
    ephemeral: str = Field(description="The sender's ephemeral X25519 public key (hex).")
    wrapped: str = Field(description="AES-256-GCM of the 32-byte content key (hex).")


class UpdateOfferOut(BaseModel):
    deployment_id: str
    artifact_id: str
    artifact_size: int
    artifact_sha256: str
    download_url: str
    manifest: SignedManifestOut
    allow_downgrade: bool
    wrapped_key: WrappedKeyOut | None = Field(
        default=None,
        description="An artifact encrypted per device: its content key wrapped for this "
        "device's X25519 key (inventory attribute fleetcast.x25519). Absent otherwise.",
    )


class NextUpdateOut(BaseModel):
    """``GET /next``: the update to install, or null."""

    update: UpdateOfferOut | None


# ----------------------------------------------------------------- devices


class DeviceOut(BaseModel):
    id: str
    kind: DeviceKindName = "native"
    identity: dict[str, str]
    public_key_id: str
    status: DeviceStatusName
    device_type: str
    tags: list[str]
    attributes: dict[str, Any]
    artifact_name: str | None
    artifact_version: str | None
    last_seen_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    version_report: VersionReportOut | None = Field(
        default=None,
        description="The last signed version report the device proved (ADR 0008); "
        "in GET /devices/{id} only.",
    )


class DevicePage(BaseModel):
    items: list[DeviceOut]
    total: int


class TagsIn(_In):
    tags: list[str]


class PreauthorizeIn(_In):
    identity: dict[str, str] = Field(min_length=1)
    public_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=16384,
        description="PEM: Ed25519 (native); RSA, ECDSA or Ed25519 (mender); none for ddi.",
    )
    device_type: str = Field(min_length=1, max_length=128)
    kind: DeviceKindName = Field(
        default="native", description='ddi: identity is {"controller_id": ...}.'
    )


class PublicKeyIn(_In):
    public_key: str = Field(
        min_length=1, max_length=16384, description="The device's new Ed25519 public key (PEM)."
    )


class EventOut(BaseModel):
    id: int
    at: dt.datetime
    kind: Literal["admission", "status"]
    state: str
    deployment_id: str | None
    artifact_name: str | None
    artifact_version: str | None
    message: str
    log_tail: list[str]
    rolled_back: bool


class EventList(BaseModel):
    items: list[EventOut]


class FleetEventOut(EventOut):
    """A history entry in the fleet-wide event list: it names its device."""

    device_id: str
    device_identity: dict[str, str]


class FleetEventList(BaseModel):
    items: list[FleetEventOut]
    next_before: int | None = Field(
        description="Pass as `before` for the next (older) page; null on the last page."
    )


class EnrollmentTokenIn(_In):
    expires_in: int = Field(default=86400, ge=60, le=366 * 86400)
    tags: list[str] = Field(default_factory=list)


class EnrollmentTokenOut(BaseModel):
    token: str
    expires_at: dt.datetime


# ----------------------------------------------------------------- artifacts


class ArtifactOut(BaseModel):
    id: str
    name: str
    version: str
    compatible: list[str]
    payload_type: str
    size: int
    sha256: str
    signer_keyid: str
    format: ArtifactFormatName = "fleetcast"
    manifest: SignedManifestOut | None = Field(
        description="The signed manifest of a fleetcast artifact; null for other formats."
    )
    details: dict[str, Any] | None = Field(
        default=None,
        description="file: filename, sha1, md5; mender: the header (artifact name, "
        "device types, payload types, provides, depends).",
    )
    created_at: dt.datetime


class ArtifactList(BaseModel):
    items: list[ArtifactOut]


# ----------------------------------------------------------------- deployments


class MaintenanceWindowIn(_In):
    """A daily window from `start` (local time at `utc_offset_minutes`) on `weekdays` (0: Mon)."""

    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["22:00"])
    duration_minutes: int = Field(ge=1, le=7 * 24 * 60)
    utc_offset_minutes: int = Field(default=0, ge=-14 * 60, le=14 * 60)
    weekdays: list[int] = Field(default_factory=list, description="Empty: every day.")


class DdiOptionsIn(_In):
    """hawkBit action type and maintenance window for the DDI devices of a deployment."""

    action_type: Literal["forced", "soft", "downloadonly"] = "forced"
    maintenance_window: MaintenanceWindowIn | None = Field(
        default=None,
        description="Outside it, a DDI device that has not started is not offered the update.",
    )


class TargetIn(_In):
    device_ids: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    device_types: list[str] = Field(default_factory=list)


class PhaseIn(_In):
    """A phase: cumulative ``percent`` of the target or ``count`` of devices (exactly one)."""

    percent: int | None = None
    count: int | None = None
    soak_seconds: int = 0
    max_failure_percent: int | None = Field(
        default=None,
        description="Pause when more than this share of the phase fails (default 100: never).",
    )


class DeploymentIn(_In):
    name: str = Field(min_length=1, max_length=256)
    artifact_id: str
    target: TargetIn
    phases: list[PhaseIn] | None = Field(
        default=None, description="Omitted: one phase at 100% (everyone at once)."
    )
    allow_downgrade: bool = False
    alternatives: list[str] = Field(
        default_factory=list,
        description="More artifacts (other formats or device types): each device gets the "
        "first of artifact_id and these that it can install.",
    )
    ddi: DdiOptionsIn | None = Field(
        default=None, description="How hawkBit-DDI devices get the update."
    )


class PhaseOut(BaseModel):
    index: int
    percent: int | None
    count: int | None
    soak_seconds: int
    max_failure_percent: int
    devices: int
    counts: dict[str, int]


class DeploymentOut(BaseModel):
    id: str
    name: str
    artifact_id: str
    alternatives: list[str] = Field(default_factory=list)
    ddi: DdiOptionsIn | None = None
    artifact_name: str
    artifact_version: str
    target: TargetIn
    allow_downgrade: bool
    status: DeploymentStatusName
    pause_reason: str | None
    current_phase: int = Field(description="Index into phases (0-based).")
    phase_started_at: dt.datetime | None
    phase_completed_at: dt.datetime | None
    phases: list[PhaseOut]
    total: int
    counts: dict[str, int]
    bytes_shipped: int = Field(
        default=0, description="Bytes sent to the devices: deltas and full artifacts."
    )
    bytes_full: int = Field(
        default=0, description="What full artifacts would have cost the same devices."
    )
    created_at: dt.datetime
    finished_at: dt.datetime | None


class DeploymentList(BaseModel):
    items: list[DeploymentOut]


class DeploymentDeviceOut(BaseModel):
    device_id: str
    artifact_id: str | None = Field(
        default=None, description="The artifact this device gets; null when skipped."
    )
    device_identity: dict[str, str] = Field(
        default_factory=dict, description="The device's identity (e.g. its serial)."
    )
    phase: int | None
    state: str
    progress: int | None
    last_message: str
    log_tail: list[str]
    rolled_back: bool
    updated_at: dt.datetime


class DeploymentDevicePage(BaseModel):
    items: list[DeploymentDeviceOut]
    total: int


# ----------------------------------------------------------------- fleet


class VersionCount(BaseModel):
    artifact_name: str | None
    artifact_version: str | None
    devices: int


class DeviceTypeCount(BaseModel):
    device_type: str
    devices: int


class FleetSummaryOut(BaseModel):
    """Fleet-wide counts for a dashboard; derived from the devices and deployments tables."""

    devices: int = Field(description="Accepted devices: the fleet that can be updated.")
    by_status: dict[str, int] = Field(description="Devices per admission status (all of them).")
    online: int = Field(description="Accepted devices seen within `online_within` seconds.")
    offline: int = Field(description="Accepted devices seen before that, or never.")
    never_seen: int = Field(description="Accepted devices that never contacted the server.")
    online_within: int
    versions: list[VersionCount] = Field(
        description="Installed artifact and version of accepted devices, most devices first."
    )
    device_types: list[DeviceTypeCount]
    deployments: dict[str, int] = Field(description="Deployments per status.")


# ----------------------------------------------------------------- API tokens


class TokenIn(_In):
    name: str = Field(min_length=1, max_length=128)
    scope: TokenScopeName


class TokenOut(BaseModel):
    id: str
    name: str
    scope: TokenScopeName
    created_at: dt.datetime


class NewTokenOut(TokenOut):
    token: str = Field(description="The token itself; shown once, only its hash is stored.")


class TokenList(BaseModel):
    items: list[TokenOut]


class AuditEventOut(BaseModel):
    """One management action: who, what, when, and how it ended."""

    id: int
    at: dt.datetime
    actor_id: str = Field(description="The API token's id.")
    actor_name: str = Field(description="The API token's name when it acted.")
    client: str | None = Field(description="The client's address, as the server saw it.")
    action: str = Field(description="<resource>.<action>, e.g. devices.accept.")
    target_id: str | None
    details: dict[str, Any] = Field(description="The request, secrets redacted.")
    outcome: str = Field(description="ok, or the error code of the answer.")
    status_code: int


class AuditEventList(BaseModel):
    items: list[AuditEventOut]
    next_before: int | None = Field(
        description="Pass as `before` for the next (older) page; null on the last page."
    )
