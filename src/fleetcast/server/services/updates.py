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

import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.core.envelope import WrappedKey
from fleetcast.core.manifest import SignedManifest
from fleetcast.core.wire import DeltaOffer, StatusReport, UpdateOffer
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
    DeviceStatus,
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


def _candidates() -> Select[str, str, str | None, Deployment]:
    """Memberships a device could work on now (add a ``where`` for the devices)."""
    return (
        select(
            DeploymentDevice.device_id,
            DeploymentDevice.state,
            DeploymentDevice.artifact_id,
            Deployment,
        )
        .join(Deployment, Deployment.id == DeploymentDevice.deployment_id)
        .where(
            DeploymentDevice.state.in_([s.value for s in OFFERABLE]),
            DeploymentDevice.phase <= Deployment.current_phase,
            Deployment.status.in_([DeploymentStatus.RUNNING.value, DeploymentStatus.PAUSED.value]),
        )
        .order_by(Deployment.created_at, Deployment.id)
    )


def _choose(
    rows: Sequence[tuple[str, str | None, Deployment]],
) -> tuple[Deployment, str | None] | None:
    """Apply the one-active-deployment rule (module docstring) to a device's candidates,
    oldest first: the deployment and the member's own artifact id, or None."""
    busy = [(d, a) for state, a, d in rows if state in IN_PROGRESS]
    if busy:
        deployment, artifact_id = busy[0]
        return (deployment, artifact_id) if deployment.status == DeploymentStatus.RUNNING else None
    running = [(d, a) for _, a, d in rows if d.status == DeploymentStatus.RUNNING]
    return running[0] if running else None


async def next_deployment(
    session: AsyncSession, device: Device
) -> tuple[Deployment, Artifact] | None:
    """The deployment this device should work on now and the artifact it gets, or None."""
    rows = (
        await session.execute(_candidates().where(DeploymentDevice.device_id == device.id))
    ).all()
    chosen = _choose([(state, a, d) for _, state, a, d in rows])
    if chosen is None:
        return None
    deployment, artifact_id = chosen
    return deployment, await member_artifact(session, deployment, artifact_id)


def offer_is_stable(
    device: tuple[str | None, str | None],
    attributes: dict[str, Any] | None,
    artifact: Artifact,
    settings: Settings,
) -> bool:
    """Whether the offer of ``artifact`` to a device is the same for every such device and
    changes only with the deployment or the device's membership (which notify):
    a full artifact, no delta possible, no per-device key. ``device``: its installed
    (name, version)."""
    return not content_keys.encrypted(artifact) and (
        deltas.delta_engine_for(device, attributes, artifact, settings) is None
    )


async def started_phases(session: AsyncSession, device_ids: list[str]) -> list[tuple[str, int]]:
    """The running deployments (id, current phase) in which one of these devices is
    scheduled and its phase has started: what a notification about them announced."""
    rows = await session.execute(
        select(Deployment.id, Deployment.current_phase)
        .join(DeploymentDevice, DeploymentDevice.deployment_id == Deployment.id)
        .where(
            DeploymentDevice.device_id.in_(device_ids),
            DeploymentDevice.state == RolloutState.SCHEDULED.value,
            DeploymentDevice.phase <= Deployment.current_phase,
            Deployment.status == DeploymentStatus.RUNNING.value,
        )
        .distinct()
    )
    return [(deployment_id, phase) for deployment_id, phase in rows]


@dataclass(frozen=True)
class PhaseOffer:
    """A device that gets ``offer`` now, as a bulk read found it."""

    device_id: str
    last_seen_at: dt.datetime | None
    offer: UpdateOffer


async def phase_offers(
    session: AsyncSession, deployment_id: str, settings: Settings, *, chunk: int = 5000
) -> AsyncIterator[list[PhaseOffer]]:
    """The stable offers (:func:`offer_is_stable`) of the deployment's started members
    that have not begun it, in chunks: what each would get from :func:`next_update`.

    Native accepted devices only; a device with another candidate deployment is
    left out (its own ``/next`` decides). Memory stays bounded by ``chunk`` rows.
    """
    deployment = await session.get(Deployment, deployment_id)
    if deployment is None or deployment.status != DeploymentStatus.RUNNING:
        return
    artifacts: dict[str | None, Artifact] = {}
    offers: dict[str, UpdateOffer] = {}
    with_deltas: set[str] = set()
    after = ""
    while True:
        rows = (
            await session.execute(
                select(
                    Device.id,
                    Device.last_seen_at,
                    Device.artifact_name,
                    Device.artifact_version,
                    Device.attributes,
                    DeploymentDevice.artifact_id,
                )
                .join(Device, Device.id == DeploymentDevice.device_id)
                .where(
                    DeploymentDevice.deployment_id == deployment_id,
                    DeploymentDevice.state == RolloutState.SCHEDULED.value,
                    DeploymentDevice.phase <= deployment.current_phase,
                    DeploymentDevice.device_id > after,
                    Device.status == DeviceStatus.ACCEPTED.value,
                    Device.kind == "native",
                )
                .order_by(DeploymentDevice.device_id)
                .limit(chunk)
            )
        ).all()
        if not rows:
            return
        after = rows[-1].id
        others = set(
            (
                await session.scalars(
                    _candidates()
                    .with_only_columns(DeploymentDevice.device_id)
                    .order_by(None)
                    .where(
                        DeploymentDevice.device_id.in_([r.id for r in rows]),
                        DeploymentDevice.deployment_id != deployment_id,
                    )
                )
            ).all()
        )
        found = []
        for row in rows:
            if row.id in others:
                continue
            if row.artifact_id not in artifacts:
                artifact = await member_artifact(session, deployment, row.artifact_id)
                # What every member of this artifact shares, decided once.
                artifacts[row.artifact_id] = artifact
                if not content_keys.encrypted(artifact):
                    offers[artifact.id] = _offer(deployment, artifact, settings.public_url)
                    payload = deltas.image_payload(artifact)
                    if payload is not None and deltas.choose_engine(settings, payload):
                        with_deltas.add(artifact.id)
            artifact = artifacts[row.artifact_id]
            offer = offers.get(artifact.id)
            if offer is None:
                continue  # a per-device key: each device's own /next wraps it
            installed = (row.artifact_name, row.artifact_version)
            if artifact.id in with_deltas and not offer_is_stable(
                installed, row.attributes, artifact, settings
            ):
                continue
            found.append(PhaseOffer(row.id, row.last_seen_at, offer))
        yield found


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
    return _offer(chosen, artifact, public_url, delta=decision.offer, wrapped_key=wrapped_key)


def _offer(
    deployment: Deployment,
    artifact: Artifact,
    public_url: str | None,
    *,
    delta: DeltaOffer | None = None,
    wrapped_key: WrappedKey | None = None,
) -> UpdateOffer:
    return UpdateOffer(
        deployment_id=deployment.id,
        artifact_id=artifact.id,
        artifact_size=artifact.size,
        artifact_sha256=artifact.sha256,
        download_url=(public_url or "") + download_path(artifact.id),
        manifest=SignedManifest.from_dict(artifact.manifest),
        allow_downgrade=deployment.allow_downgrade,
        delta=delta,
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
