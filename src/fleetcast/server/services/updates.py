"""The device's side of a deployment: what to install next, and its status reports.

One active deployment per device: if the device is already working on an
update (it reported downloading, installing or rebooting) in a deployment
that is not finished, that deployment is its only candidate, offered while
it runs and withheld while it is paused. Otherwise the oldest running
deployment that has scheduled the device is offered.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.core.manifest import SignedManifest
from fleetcast.core.wire import StatusReport, UpdateOffer
from fleetcast.server.db.models import Deployment, DeploymentDevice, Device, utcnow
from fleetcast.server.errors import DeploymentAbortedError, NotFoundError, StatusConflictError
from fleetcast.server.services.devices import add_event
from fleetcast.server.states import (
    IN_PROGRESS,
    INSTALLED,
    OFFERABLE,
    TERMINAL,
    DeploymentStatus,
    RolloutState,
)

MAX_LOG_LINES: Final = 100
MAX_LINE: Final = 2000
MAX_MESSAGE: Final = 4000


def download_path(artifact_id: str) -> str:
    return f"/api/device/v1/artifacts/{artifact_id}/download"


async def next_update(
    session: AsyncSession, device: Device, *, public_url: str | None = None
) -> UpdateOffer | None:
    """The update this device should install now, or None."""
    rows = (
        await session.execute(
            select(DeploymentDevice.state, Deployment)
            .join(Deployment, Deployment.id == DeploymentDevice.deployment_id)
            .where(
                DeploymentDevice.device_id == device.id,
                DeploymentDevice.state.in_([s.value for s in OFFERABLE]),
                DeploymentDevice.phase <= Deployment.current_phase,
                Deployment.status.in_(
                    [DeploymentStatus.RUNNING.value, DeploymentStatus.PAUSED.value]
                ),
            )
            .order_by(Deployment.created_at, Deployment.id)
        )
    ).all()
    busy = [d for state, d in rows if state in IN_PROGRESS]
    if busy:
        chosen: Deployment | None = busy[0] if busy[0].status == DeploymentStatus.RUNNING else None
    else:
        chosen = next((d for _, d in rows if d.status == DeploymentStatus.RUNNING), None)
    if chosen is None:
        return None
    artifact = chosen.artifact
    return UpdateOffer(
        deployment_id=chosen.id,
        artifact_id=artifact.id,
        artifact_size=artifact.size,
        artifact_sha256=artifact.sha256,
        download_url=(public_url or "") + download_path(artifact.id),
        manifest=SignedManifest.from_dict(artifact.manifest),
        allow_downgrade=chosen.allow_downgrade,
    )


async def report_status(
    session: AsyncSession, device: Device, deployment_id: str, report: StatusReport
) -> bool:
    """Record a status report; return whether anything changed (False: a repeat).

    Raises:
        NotFoundError: no such deployment, or the device is not part of it.
        DeploymentAbortedError: the deployment was aborted and the report is not final.
        StatusConflictError: the device already reported a different final state,
            or it was never offered this deployment.
    """
    deployment = await session.scalar(
        select(Deployment)
        .where(Deployment.id == deployment_id)
        .with_for_update(read=True, of=Deployment)
    )
    member = None
    if deployment is not None:
        member = await session.scalar(
            select(DeploymentDevice)
            .where(
                DeploymentDevice.deployment_id == deployment_id,
                DeploymentDevice.device_id == device.id,
            )
            .with_for_update()
        )
    if deployment is None or member is None:
        raise NotFoundError(
            f"device {device.id} is not part of deployment {deployment_id}",
            details={"deployment_id": deployment_id, "device_id": device.id},
        )
    new = RolloutState(report.status.value)
    current = RolloutState(member.state)
    context = {"deployment_id": deployment_id, "device_id": device.id, "state": current.value}
    if deployment.status == DeploymentStatus.ABORTED and not report.status.terminal:
        raise DeploymentAbortedError(f"deployment {deployment_id} was aborted", details=context)
    if new == current:
        if report.progress is not None and member.progress != report.progress:
            member.progress = report.progress
            await session.commit()
        return False
    # A device that had not started when the deployment was aborted may still
    # have finished (it got the offer just before): its final word is recorded.
    finished_despite_abort = current == RolloutState.ABORTED and report.status.terminal
    if current in TERMINAL and not finished_despite_abort:
        raise StatusConflictError(
            f"device already reported {current.value} for deployment {deployment_id}",
            details=context,
        )
    if current == RolloutState.PENDING:
        raise StatusConflictError(
            f"deployment {deployment_id} has not been offered to device {device.id} yet",
            details=context,
        )
    log_tail = [line[:MAX_LINE] for line in report.log_tail[-MAX_LOG_LINES:]]
    message = report.message[:MAX_MESSAGE]
    member.state = new.value
    member.progress = report.progress
    member.last_message = message
    member.log_tail = log_tail
    member.rolled_back = member.rolled_back or report.rolled_back
    member.updated_at = utcnow()
    artifact = deployment.artifact
    add_event(
        session,
        device.id,
        kind="status",
        state=new.value,
        message=message,
        deployment_id=deployment_id,
        artifact=(artifact.name, artifact.version),
        log_tail=log_tail,
        rolled_back=report.rolled_back,
    )
    if new in INSTALLED:
        device.artifact_name = artifact.name
        device.artifact_version = artifact.version
    await session.commit()
    return True
