"""Pydantic request and response schemas (the OpenAPI surface).

They are separate from the ORM rows and from the wire objects in
``fleetcast.core.wire``: device requests are validated here for a precise
422, then converted to wire objects for the services.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DeviceStatusName = Literal["pending", "accepted", "preauthorized", "rejected", "decommissioned"]
DeploymentStatusName = Literal["running", "paused", "completed", "aborted"]
ReportStatusName = Literal[
    "downloading", "installing", "rebooting", "success", "failure", "already-installed"
]


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


class SignedManifestOut(BaseModel):
    signed: dict[str, Any]
    signatures: list[dict[str, str]]


class UpdateOfferOut(BaseModel):
    deployment_id: str
    artifact_id: str
    artifact_size: int
    artifact_sha256: str
    download_url: str
    manifest: SignedManifestOut
    allow_downgrade: bool


class NextUpdateOut(BaseModel):
    """``GET /next``: the update to install, or null."""

    update: UpdateOfferOut | None


# ----------------------------------------------------------------- devices


class DeviceOut(BaseModel):
    id: str
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


class DevicePage(BaseModel):
    items: list[DeviceOut]
    total: int


class TagsIn(_In):
    tags: list[str]


class PreauthorizeIn(_In):
    identity: dict[str, str] = Field(min_length=1)
    public_key: str = Field(min_length=1, max_length=4096)
    device_type: str = Field(min_length=1, max_length=128)


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
    manifest: SignedManifestOut
    created_at: dt.datetime


class ArtifactList(BaseModel):
    items: list[ArtifactOut]


# ----------------------------------------------------------------- deployments


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
    created_at: dt.datetime
    finished_at: dt.datetime | None


class DeploymentList(BaseModel):
    items: list[DeploymentOut]


class DeploymentDeviceOut(BaseModel):
    device_id: str
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
