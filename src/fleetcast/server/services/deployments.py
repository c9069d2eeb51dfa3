"""Deployments: creation (target resolution and phase assignment), status, and steering.

Creation resolves the target once, at creation time: the accepted devices
matching it (OR within a kind, AND across kinds). Each device gets the
deployment's artifact or one of its alternatives, the first whose format its
kind installs and whose ``compatible`` list holds its type
(``fleetcast.server.services.formats``); devices none fits are recorded as
``skipped``; the rest are ordered and assigned to phases
(``fleetcast.server.rollout.plan``).
Phase 0 starts at once. The engine does the rest.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.server.db.models import (
    Artifact,
    Deployment,
    DeploymentDevice,
    Device,
    DeviceTag,
    utcnow,
)
from fleetcast.server.errors import ConflictError, NotFoundError, RequestInvalidError
from fleetcast.server.notify import Notifier
from fleetcast.server.rollout.engine import phase_counts
from fleetcast.server.rollout.plan import Phase, assign_phases, validate_phases
from fleetcast.server.services.formats import pick_artifact
from fleetcast.server.states import (
    FINISHED,
    OFFERABLE,
    DeploymentStatus,
    DeviceStatus,
    RolloutState,
)
from fleetcast.server.trust.releases import require_released

# Rows per INSERT when registering a large target.
_BATCH = 5000


@dataclass(frozen=True)
class Target:
    """Which devices a deployment is for: OR within a kind, AND across kinds."""

    device_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    device_types: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.device_ids or self.tags or self.device_types)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_ids": list(self.device_ids),
            "tags": list(self.tags),
            "device_types": list(self.device_types),
        }


@dataclass
class DeploymentSummary:
    """A deployment with its device counts per phase and state."""

    deployment: Deployment
    phase_counts: dict[int, Counter[str]] = field(default_factory=dict)
    totals: Counter[str] = field(default_factory=Counter)
    # Bytes the server sent the devices (deltas and full downloads) and what
    # full images would have cost them (see fleetcast.server.services.deltas).
    bytes_shipped: int = 0
    bytes_full: int = 0


def _target_query(target: Target) -> Select[str, str, str]:
    query = select(Device.id, Device.device_type, Device.kind).where(
        Device.status == DeviceStatus.ACCEPTED.value
    )
    if target.device_ids:
        query = query.where(Device.id.in_(target.device_ids))
    if target.tags:
        query = query.where(
            Device.id.in_(select(DeviceTag.device_id).where(DeviceTag.tag.in_(target.tags)))
        )
    if target.device_types:
        query = query.where(Device.device_type.in_(target.device_types))
    return query


async def create_deployment(
    session: AsyncSession,
    notifier: Notifier,
    *,
    name: str,
    artifact_id: str,
    target: Target,
    phases: Sequence[Phase],
    allow_downgrade: bool = False,
    alternatives: Sequence[str] = (),
    options: dict[str, Any] | None = None,
) -> Deployment:
    """Create a deployment and start its first phase.

    ``alternatives`` are further artifacts (typically of other formats) for
    devices the main artifact does not fit; ``options`` are kept with the
    deployment for the compatibility APIs (e.g. ``{"ddi": {...}}``).

    Raises:
        RequestInvalidError: bad phases, an empty target, a target that matches
            no accepted device, or an unknown artifact.
        ArtifactNotReleasedError: the image repository is set up and a
            Fleetcast artifact has no target in it.
    """
    validate_phases(phases)
    if target.empty:
        raise RequestInvalidError(
            "target is empty: give device_ids, tags or device_types", details={"field": "target"}
        )
    artifact = await session.get(Artifact, artifact_id)
    if artifact is None:
        raise RequestInvalidError(
            f"artifact {artifact_id} does not exist",
            details={"field": "artifact_id", "artifact_id": artifact_id},
        )
    candidates = [artifact]
    for other_id in alternatives:
        other = await session.get(Artifact, other_id)
        if other is None or other in candidates:
            raise RequestInvalidError(
                f"alternative artifact {other_id} does not exist or is named twice",
                details={"field": "alternatives", "artifact_id": other_id},
            )
        candidates.append(other)
    for candidate in candidates:
        # With an image repository, devices only trust released artifacts (ADR 0008).
        await require_released(session, candidate)
    matched = (await session.execute(_target_query(target))).all()
    if not matched:
        raise RequestInvalidError("target matches no accepted device", details={"field": "target"})
    artifact_of: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for device_id, device_type, kind in matched:
        picked, why_not = pick_artifact(kind, device_type, candidates)
        if picked is None:
            skipped[device_id] = why_not
        else:
            artifact_of[device_id] = picked.id
    fits = [device_id for device_id, _, _ in matched if device_id in artifact_of]

    now = utcnow()
    deployment = Deployment(
        id=str(uuid.uuid4()),
        name=name,
        artifact_id=artifact.id,
        target=target.to_dict(),
        phases=[p.to_dict() for p in phases],
        allow_downgrade=allow_downgrade,
        options={**(options or {}), "alternatives": [a.id for a in candidates[1:]]},
        status=DeploymentStatus.RUNNING.value,
        current_phase=0,
        phase_started_at=now,
        failures_acknowledged=0,
        device_count=len(matched),
        created_at=now,
    )
    session.add(deployment)
    await session.flush()
    rows: list[dict[str, Any]] = [
        {
            "deployment_id": deployment.id,
            "device_id": device_id,
            "phase": phase,
            "position": position,
            "artifact_id": artifact_of[device_id],
            "state": (RolloutState.SCHEDULED if phase == 0 else RolloutState.PENDING).value,
            "last_message": "",
            "log_tail": [],
            "rolled_back": False,
            "updated_at": now,
        }
        for position, (device_id, phase) in enumerate(assign_phases(deployment.id, fits, phases))
    ]
    rows += [
        {
            "deployment_id": deployment.id,
            "device_id": device_id,
            "phase": None,
            "position": -1,
            "artifact_id": None,
            "state": RolloutState.SKIPPED.value,
            "last_message": skipped[device_id],
            "log_tail": [],
            "rolled_back": False,
            "updated_at": now,
        }
        for device_id in sorted(skipped)
    ]
    for start in range(0, len(rows), _BATCH):
        await session.execute(insert(DeploymentDevice), rows[start : start + _BATCH])
    await session.commit()
    notifier.notify(r["device_id"] for r in rows if r["state"] == RolloutState.SCHEDULED)
    return deployment


async def _get(session: AsyncSession, deployment_id: str, *, lock: bool = False) -> Deployment:
    query = select(Deployment).where(Deployment.id == deployment_id)
    if lock:
        query = query.with_for_update(of=Deployment)
    deployment = await session.scalar(query)
    if deployment is None:
        raise NotFoundError(
            f"deployment {deployment_id} not found", details={"deployment_id": deployment_id}
        )
    return deployment


async def summarize(session: AsyncSession, deployment_id: str) -> DeploymentSummary:
    """A deployment with counts per phase and state.

    Raises:
        NotFoundError: no such deployment.
    """
    deployment = await _get(session, deployment_id)
    summary = DeploymentSummary(deployment)
    rows = await session.execute(
        select(
            DeploymentDevice.phase,
            DeploymentDevice.state,
            func.count(),
            func.sum(DeploymentDevice.bytes_shipped),
            func.sum(DeploymentDevice.bytes_full),
        )
        .where(DeploymentDevice.deployment_id == deployment_id)
        .group_by(DeploymentDevice.phase, DeploymentDevice.state)
    )
    for phase, state, n, shipped, full in rows:
        _count(summary, phase, state, int(n), shipped, full)
    return summary


async def list_deployments(session: AsyncSession) -> list[DeploymentSummary]:
    """Every deployment, newest first, with counts per phase and state (one grouped query)."""
    deployments = list(
        await session.scalars(select(Deployment).order_by(Deployment.created_at.desc()))
    )
    summaries = {d.id: DeploymentSummary(d) for d in deployments}
    rows = await session.execute(
        select(
            DeploymentDevice.deployment_id,
            DeploymentDevice.phase,
            DeploymentDevice.state,
            func.count(),
            func.sum(DeploymentDevice.bytes_shipped),
            func.sum(DeploymentDevice.bytes_full),
        ).group_by(DeploymentDevice.deployment_id, DeploymentDevice.phase, DeploymentDevice.state)
    )
    for deployment_id, phase, state, n, shipped, full in rows:
        summary = summaries.get(deployment_id)
        if summary is not None:
            _count(summary, phase, state, int(n), shipped, full)
    return list(summaries.values())


def _count(
    summary: DeploymentSummary,
    phase: int | None,
    state: str,
    n: int,
    shipped: int | None = None,
    full: int | None = None,
) -> None:
    if phase is not None:
        summary.phase_counts.setdefault(phase, Counter())[state] += n
    summary.totals[state] += n
    summary.bytes_shipped += int(shipped or 0)
    summary.bytes_full += int(full or 0)


async def list_members(
    session: AsyncSession,
    deployment_id: str,
    *,
    state: RolloutState | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[DeploymentDevice], int]:
    """One page of a deployment's devices in rollout order, and their total.

    Raises:
        NotFoundError: no such deployment.
    """
    await _get(session, deployment_id)
    query = select(DeploymentDevice).where(DeploymentDevice.deployment_id == deployment_id)
    if state is not None:
        query = query.where(DeploymentDevice.state == state.value)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(
            DeploymentDevice.phase.is_(None),
            DeploymentDevice.phase,
            DeploymentDevice.position,
            DeploymentDevice.device_id,
        )
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total or 0)


async def _offered_to(session: AsyncSession, deployment_id: str) -> list[str]:
    rows = await session.scalars(
        select(DeploymentDevice.device_id).where(
            DeploymentDevice.deployment_id == deployment_id,
            DeploymentDevice.state.in_([s.value for s in OFFERABLE]),
        )
    )
    return list(rows)


def _refuse_finished(deployment: Deployment, action: str) -> None:
    if deployment.status in FINISHED:
        raise ConflictError(
            f"cannot {action} deployment {deployment.id}: it is {deployment.status}",
            details={"deployment_id": deployment.id, "status": deployment.status},
        )


async def pause(session: AsyncSession, notifier: Notifier, deployment_id: str) -> Deployment:
    """Stop offering the update; devices already updating may finish.

    Raises:
        NotFoundError: no such deployment.
        ConflictError: it is completed or aborted.
    """
    deployment = await _get(session, deployment_id, lock=True)
    _refuse_finished(deployment, "pause")
    if deployment.status == DeploymentStatus.RUNNING:
        deployment.status = DeploymentStatus.PAUSED.value
        deployment.pause_reason = "paused by an operator"
    devices = await _offered_to(session, deployment_id)
    await session.commit()
    notifier.notify(devices)
    return deployment


async def resume(session: AsyncSession, notifier: Notifier, deployment_id: str) -> Deployment:
    """Continue a paused deployment; the current phase's failures so far count as acknowledged.

    Raises:
        NotFoundError: no such deployment.
        ConflictError: it is completed or aborted.
    """
    deployment = await _get(session, deployment_id, lock=True)
    _refuse_finished(deployment, "resume")
    if deployment.status == DeploymentStatus.PAUSED:
        counts = await phase_counts(session, deployment.id, deployment.current_phase)
        deployment.status = DeploymentStatus.RUNNING.value
        deployment.pause_reason = None
        deployment.failures_acknowledged = counts[RolloutState.FAILURE.value]
    devices = await _offered_to(session, deployment_id)
    await session.commit()
    notifier.notify(devices)
    return deployment


async def abort(session: AsyncSession, notifier: Notifier, deployment_id: str) -> Deployment:
    """Abort: devices that have not started never will; devices updating may report their end.

    Raises:
        NotFoundError: no such deployment.
        ConflictError: it is completed.
    """
    deployment = await _get(session, deployment_id, lock=True)
    if deployment.status == DeploymentStatus.ABORTED:
        return deployment
    if deployment.status == DeploymentStatus.COMPLETED:
        raise ConflictError(
            f"deployment {deployment.id} is completed; nothing to abort",
            details={"deployment_id": deployment.id, "status": deployment.status},
        )
    devices = await _offered_to(session, deployment_id)
    now = utcnow()
    deployment.status = DeploymentStatus.ABORTED.value
    deployment.finished_at = now
    deployment.pause_reason = None
    await session.execute(
        update(DeploymentDevice)
        .where(
            DeploymentDevice.deployment_id == deployment_id,
            DeploymentDevice.state.in_([RolloutState.PENDING.value, RolloutState.SCHEDULED.value]),
        )
        .values(state=RolloutState.ABORTED.value, last_message="deployment aborted", updated_at=now)
    )
    await session.commit()
    notifier.notify(devices)
    return deployment
