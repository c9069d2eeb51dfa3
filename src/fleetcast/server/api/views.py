"""Conversions from ORM rows and service results to response schemas."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fleetcast.server.api.schemas import (
    ArtifactOut,
    DeploymentDeviceOut,
    DeploymentOut,
    DeviceOut,
    EventOut,
    FleetEventOut,
    PhaseOut,
    SignedManifestOut,
    TargetIn,
    TokenOut,
)
from fleetcast.server.api.trust_schemas import VersionReportOut
from fleetcast.server.db.models import (
    AdminToken,
    Artifact,
    DeploymentDevice,
    Device,
    DeviceEvent,
)
from fleetcast.server.db.trust_models import TufVersionReport
from fleetcast.server.rollout.plan import Phase
from fleetcast.server.services.credentials import scope_of
from fleetcast.server.services.deployments import DeploymentSummary
from fleetcast.server.services.devices import identity_of


def device_out(device: Device) -> DeviceOut:
    return DeviceOut(
        id=device.id,
        kind=device.kind,
        identity=identity_of(device),
        public_key_id=device.public_key_id,
        status=device.status,
        device_type=device.device_type,
        tags=device.tag_names,
        attributes=dict(device.attributes),
        artifact_name=device.artifact_name,
        artifact_version=device.artifact_version,
        last_seen_at=device.last_seen_at,
        created_at=device.created_at,
        updated_at=device.updated_at,
    )


def version_report_out(report: TufVersionReport) -> VersionReportOut:
    return VersionReportOut(
        received_at=report.received_at,
        time=report.reported_time,
        nonce=report.nonce,
        installed_target=report.installed_target,
        installed_sha256=report.installed_sha256,
        release_counter=report.release_counter,
        report=dict(report.report),
    )


def event_out(event: DeviceEvent) -> EventOut:
    return EventOut(
        id=event.id,
        at=event.at,
        kind=event.kind,
        state=event.state,
        deployment_id=event.deployment_id,
        artifact_name=event.artifact_name,
        artifact_version=event.artifact_version,
        message=event.message,
        log_tail=list(event.log_tail),
        rolled_back=event.rolled_back,
    )


def fleet_event_out(event: DeviceEvent, identity: dict[str, str] | None = None) -> FleetEventOut:
    return FleetEventOut(
        device_id=event.device_id, device_identity=identity or {}, **event_out(event).model_dump()
    )


def token_out(token: AdminToken) -> TokenOut:
    return TokenOut(
        id=token.id, name=token.name, scope=scope_of(token).value, created_at=token.created_at
    )


def _manifest(envelope: dict[str, Any]) -> SignedManifestOut:
    return SignedManifestOut(signed=envelope["signed"], signatures=envelope["signatures"])


def artifact_out(artifact: Artifact) -> ArtifactOut:
    return ArtifactOut(
        id=artifact.id,
        name=artifact.name,
        version=artifact.version,
        compatible=list(artifact.compatible),
        payload_type=artifact.payload_type,
        size=artifact.size,
        sha256=artifact.sha256,
        signer_keyid=artifact.signer_keyid,
        format=artifact.format,
        manifest=_manifest(artifact.manifest) if artifact.format == "fleetcast" else None,
        details=None if artifact.format == "fleetcast" else dict(artifact.manifest),
        created_at=artifact.created_at,
    )


def deployment_out(summary: DeploymentSummary) -> DeploymentOut:
    d = summary.deployment
    phases = []
    for index, raw in enumerate(d.phases):
        phase = Phase.from_dict(raw)
        counts = summary.phase_counts.get(index, Counter())
        phases.append(
            PhaseOut(
                index=index,
                percent=phase.percent,
                count=phase.count,
                soak_seconds=phase.soak_seconds,
                max_failure_percent=phase.max_failure_percent,
                devices=sum(counts.values()),
                counts=dict(counts),
            )
        )
    return DeploymentOut(
        id=d.id,
        name=d.name,
        artifact_id=d.artifact_id,
        alternatives=list((d.options or {}).get("alternatives", [])),
        ddi=(d.options or {}).get("ddi"),
        artifact_name=d.artifact.name,
        artifact_version=d.artifact.version,
        target=TargetIn(**d.target),
        allow_downgrade=d.allow_downgrade,
        status=d.status,
        pause_reason=d.pause_reason,
        current_phase=d.current_phase,
        phase_started_at=d.phase_started_at,
        phase_completed_at=d.phase_completed_at,
        phases=phases,
        total=d.device_count,
        counts=dict(summary.totals),
        bytes_shipped=summary.bytes_shipped,
        bytes_full=summary.bytes_full,
        created_at=d.created_at,
        finished_at=d.finished_at,
    )


def member_out(
    member: DeploymentDevice, identity: dict[str, str] | None = None
) -> DeploymentDeviceOut:
    return DeploymentDeviceOut(
        device_id=member.device_id,
        artifact_id=member.artifact_id,
        device_identity=identity or {},
        phase=member.phase,
        state=member.state,
        progress=member.progress,
        last_message=member.last_message,
        log_tail=list(member.log_tail),
        rolled_back=member.rolled_back,
        updated_at=member.updated_at,
    )
