"""The device's side of a deployment: what to install next, and its status reports.

One active deployment per device: if the device is already working on an
update (it reported downloading, installing or rebooting) in a deployment
that is not finished, that deployment is its only candidate, offered while
it runs and withheld while it is paused. Otherwise the oldest running
deployment that has scheduled the device is offered.

The offer carries a delta when one is ready from the device's installed
image, or is withheld while that delta is generated
(:func:`fleetcast.server.services.deltas.decide`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.core.manifest import SignedManifest
from fleetcast.core.wire import StatusReport, UpdateOffer
from fleetcast.server.db.models import Artifact, Deployment, DeploymentDevice, Device, utcnow
from fleetcast.server.errors import DeploymentAbortedError, NotFoundError, StatusConflictError
from fleetcast.server.services import content_keys, deltas
from fleetcast.server.services.devices import add_event
from fleetcast.server.settings import Settings
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


async def member_artifact(
    session: AsyncSession, deployment: Deployment, artifact_id: str | None
) -> Artifact:
    """The artifact a member of ``deployment`` gets (its own, else the deployment's)."""
    if artifact_id is None or artifact_id == deployment.artifact_id:
        return deployment.artifact
    artifact = await session.get(Artifact, artifact_id)
    assert artifact is not None, "deployment_devices.artifact_id is a foreign key"
    return artifact


async def next_deployment(
    session: AsyncSession, device: Device
) -> tuple[Deployment, Artifact] | None:
    """The deployment this device should work on now and the artifact it gets, or None."""
    rows = (
        await session.execute(
            select(DeploymentDevice.state, DeploymentDevice.artifact_id, Deployment)
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
    busy = [(a, d) for state, a, d in rows if state in IN_PROGRESS]
    if busy:
        artifact_id, deployment = busy[0]
        if deployment.status != DeploymentStatus.RUNNING:
            return None
    else:
        running = [(a, d) for _, a, d in rows if d.status == DeploymentStatus.RUNNING]
        if not running:
            return None
        artifact_id, deployment = running[0]
    return deployment, await member_artifact(session, deployment, artifact_id)


async def next_update(
    session: AsyncSession,
    device: Device,
    *,
    public_url: str | None = None,
    settings: Settings | None = None,
    on_delta_queued: Callable[[], None] | None = None,
) -> UpdateOffer | None:
    """The update this device should install now, or None.

    With ``settings``, deltas are considered (:func:`deltas.decide`): the
    offer may carry one, or be withheld while the device's delta is being
    generated; ``on_delta_queued`` is called when a generation was queued.
    """
    found = await next_deployment(session, device)
    if found is None:
        return None
    return await offer_for(
        session,
        device,
        found,
        public_url=public_url,
        settings=settings,
        on_delta_queued=on_delta_queued,
    )


async def offer_for(
    session: AsyncSession,
    device: Device,
    found: tuple[Deployment, Artifact],
    *,
    public_url: str | None = None,
    settings: Settings | None = None,
    on_delta_queued: Callable[[], None] | None = None,
) -> UpdateOffer | None:
    """The offer for a deployment :func:`next_deployment` found (see :func:`next_update`)."""
    chosen, artifact = found
    decision = deltas.DeltaDecision()
    if settings is not None:
        decision = await deltas.decide(session, device, artifact, settings, public_url=public_url)
        if decision.queued and on_delta_queued is not None:
            on_delta_queued()
        if decision.wait:
            return None
    # An artifact encrypted per device: its key wrapped for this device (ADR 0008).
    wrapped_key = None
    if settings is not None:
        wrapped_key = await content_keys.wrapped_for(session, settings.data_dir, artifact, device)
    return UpdateOffer(
        deployment_id=chosen.id,
        artifact_id=artifact.id,
        artifact_size=artifact.size,
        artifact_sha256=artifact.sha256,
        download_url=(public_url or "") + download_path(artifact.id),
        manifest=SignedManifest.from_dict(artifact.manifest),
        allow_downgrade=chosen.allow_downgrade,
        delta=decision.offer,
        wrapped_key=wrapped_key,
    )


async def report_status(
    session: AsyncSession, device: Device, deployment_id: str, report: StatusReport
) -> bool:
    """Record a status report; return whether anything changed (False: a repeat).

    A report with a ``seq`` at or below the highest one recorded for this
    membership was overtaken by a newer one (its request arrived late): it is
    ignored like a repeat. A final report is exempt: it is the device's last
    word in a deployment, so nothing newer can exist, and a device whose
    counter went back (its journal was lost) must still be able to finish.

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
    if _stale(member, report):
        return False
    if new == current:
        changed = _raise_seq(member, report.seq)
        if report.progress is not None and member.progress != report.progress:
            member.progress = report.progress
            changed = True
        if changed:
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
    _raise_seq(member, report.seq)
    artifact = await member_artifact(session, deployment, member.artifact_id)
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


def _stale(member: DeploymentDevice, report: StatusReport) -> bool:
    """Whether a newer report of this device in this deployment was already recorded."""
    return (
        report.seq is not None
        and member.report_seq is not None
        and report.seq <= member.report_seq
        and not report.status.terminal
    )


def _raise_seq(member: DeploymentDevice, seq: int | None) -> bool:
    """Remember ``seq`` as the highest recorded; return whether it was higher."""
    if seq is None or (member.report_seq is not None and seq <= member.report_seq):
        return False
    member.report_seq = seq
    return True
