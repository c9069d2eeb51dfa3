"""Management API: deployments (``/api/v1/deployments``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from fleetcast.server.api.audit import Audit, audit_trail
from fleetcast.server.api.deps import Session, State, current_admin
from fleetcast.server.api.schemas import (
    DeploymentDevicePage,
    DeploymentIn,
    DeploymentList,
    DeploymentOut,
    ErrorResponse,
)
from fleetcast.server.api.views import deployment_out, member_out
from fleetcast.server.rollout.plan import DEFAULT_MAX_FAILURE_PERCENT, Phase
from fleetcast.server.services import deployments, devices
from fleetcast.server.services.deployments import Target
from fleetcast.server.states import RolloutState

router = APIRouter(
    prefix="/api/v1/deployments",
    tags=["deployments"],
    dependencies=[
        Depends(audit_trail, scope="function"),
        Depends(current_admin, scope="function"),
    ],
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)


@router.post(
    "",
    response_model=DeploymentOut,
    status_code=201,
    responses={422: {"model": ErrorResponse}},
)
async def create(body: DeploymentIn, session: Session, state: State, audit: Audit) -> DeploymentOut:
    """Create a phased deployment; its first phase starts at once."""
    # No phases: everyone at once. An explicit empty list is refused by validation.
    phases = (
        [Phase(percent=100)]
        if body.phases is None
        else [
            Phase(
                percent=p.percent,
                count=p.count,
                soak_seconds=p.soak_seconds,
                max_failure_percent=(
                    DEFAULT_MAX_FAILURE_PERCENT
                    if p.max_failure_percent is None
                    else p.max_failure_percent
                ),
            )
            for p in body.phases
        ]
    )
    deployment = await deployments.create_deployment(
        session,
        state.notifier,
        name=body.name,
        artifact_id=body.artifact_id,
        target=Target(
            device_ids=tuple(body.target.device_ids),
            tags=tuple(body.target.tags),
            device_types=tuple(body.target.device_types),
        ),
        phases=phases,
        allow_downgrade=body.allow_downgrade,
        alternatives=tuple(body.alternatives),
        options={"ddi": body.ddi.model_dump()} if body.ddi else None,
    )
    audit.target_id = deployment.id
    state.engine.nudge()
    return deployment_out(await deployments.summarize(session, deployment.id))


@router.get("", response_model=DeploymentList)
async def list_deployments(session: Session) -> DeploymentList:
    return DeploymentList(
        items=[deployment_out(s) for s in await deployments.list_deployments(session)]
    )


@router.get("/{deployment_id}", response_model=DeploymentOut)
async def get_deployment(deployment_id: str, session: Session) -> DeploymentOut:
    """Status, current phase, and device counts per phase and state."""
    return deployment_out(await deployments.summarize(session, deployment_id))


@router.get("/{deployment_id}/devices", response_model=DeploymentDevicePage)
async def list_devices(
    deployment_id: str,
    session: Session,
    state: RolloutState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> DeploymentDevicePage:
    """Per-device state, phase, last message and identity, in rollout order."""
    rows, total = await deployments.list_members(
        session, deployment_id, state=state, limit=limit, offset=offset
    )
    names = await devices.identities(session, [m.device_id for m in rows])
    return DeploymentDevicePage(
        items=[member_out(m, names.get(m.device_id)) for m in rows], total=total
    )


@router.post(
    "/{deployment_id}/pause",
    response_model=DeploymentOut,
    responses={409: {"model": ErrorResponse}},
)
async def pause(deployment_id: str, session: Session, state: State) -> DeploymentOut:
    """No device starts any more; devices already updating finish."""
    await deployments.pause(session, state.notifier, deployment_id)
    return deployment_out(await deployments.summarize(session, deployment_id))


@router.post(
    "/{deployment_id}/resume",
    response_model=DeploymentOut,
    responses={409: {"model": ErrorResponse}},
)
async def resume(deployment_id: str, session: Session, state: State) -> DeploymentOut:
    """Continue a paused deployment; failures so far are acknowledged."""
    await deployments.resume(session, state.notifier, deployment_id)
    state.engine.nudge()
    return deployment_out(await deployments.summarize(session, deployment_id))


@router.post(
    "/{deployment_id}/abort",
    response_model=DeploymentOut,
    responses={409: {"model": ErrorResponse}},
)
async def abort(deployment_id: str, session: Session, state: State) -> DeploymentOut:
    """Stop for good: devices that have not started never will."""
    await deployments.abort(session, state.notifier, deployment_id)
    return deployment_out(await deployments.summarize(session, deployment_id))
