"""Management API: the fleet at a glance (``/api/v1/fleet``) and its events (``/api/v1/events``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from fleetcast.server.api.deps import Session, current_admin
from fleetcast.server.api.schemas import (
    DeviceTypeCount,
    ErrorResponse,
    FleetEventList,
    FleetSummaryOut,
    VersionCount,
)
from fleetcast.server.api.views import fleet_event_out
from fleetcast.server.services import devices, fleet

router = APIRouter(
    prefix="/api/v1",
    tags=["fleet"],
    dependencies=[Depends(current_admin, scope="function")],
    responses={401: {"model": ErrorResponse}},
)


@router.get("/fleet/summary", response_model=FleetSummaryOut)
async def summary(
    session: Session,
    online_within: Annotated[
        int, Query(ge=1, le=366 * 86400, description="Seconds since last seen to count as online.")
    ] = fleet.ONLINE_WITHIN,
) -> FleetSummaryOut:
    """Fleet size, online/offline, installed versions, device types, deployments per status."""
    result = await fleet.summarize(session, online_within=online_within)
    return FleetSummaryOut(
        devices=result.devices,
        by_status=result.by_status,
        online=result.online,
        offline=result.offline,
        never_seen=result.never_seen,
        online_within=result.online_within,
        versions=[
            VersionCount(artifact_name=name, artifact_version=version, devices=n)
            for name, version, n in result.versions
        ],
        device_types=[DeviceTypeCount(device_type=t, devices=n) for t, n in result.device_types],
        deployments=result.deployments,
    )


@router.get("/events", response_model=FleetEventList)
async def events(
    session: Session,
    kind: Literal["admission", "status"] | None = None,
    state: Annotated[str | None, Query(description="E.g. failure, success, accepted.")] = None,
    deployment_id: str | None = None,
    device_id: str | None = None,
    before: Annotated[
        int | None, Query(ge=1, le=2**62, description="Only events older than this id.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FleetEventList:
    """Device history entries across the fleet, newest first (e.g. the recent failures)."""
    rows = await devices.recent_events(
        session,
        kind=kind,
        state=state,
        deployment_id=deployment_id,
        device_id=device_id,
        before=before,
        limit=limit,
    )
    names = await devices.identities(session, sorted({e.device_id for e in rows}))
    return FleetEventList(
        items=[fleet_event_out(e, names.get(e.device_id)) for e in rows],
        next_before=rows[-1].id if len(rows) == limit else None,
    )
