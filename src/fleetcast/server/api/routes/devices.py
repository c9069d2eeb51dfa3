"""Management API: devices (``/api/v1/devices``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from fleetcast.server.api.audit import Audit, audit_trail
from fleetcast.server.api.deps import Session, State, current_admin
from fleetcast.server.api.schemas import (
    DeviceOut,
    DevicePage,
    ErrorResponse,
    EventList,
    PreauthorizeIn,
    PublicKeyIn,
    TagsIn,
)
from fleetcast.server.api.views import device_out, event_out, version_report_out
from fleetcast.server.compat import manage
from fleetcast.server.errors import RequestInvalidError
from fleetcast.server.services import devices, fleet
from fleetcast.server.services.formats import DeviceKind
from fleetcast.server.states import DeviceStatus
from fleetcast.server.trust import reports

router = APIRouter(
    prefix="/api/v1/devices",
    tags=["devices"],
    dependencies=[
        Depends(audit_trail, scope="function"),
        Depends(current_admin, scope="function"),
    ],
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)


@router.get("", response_model=DevicePage)
async def list_devices(
    session: Session,
    status: DeviceStatus | None = None,
    device_type: str | None = None,
    tag: str | None = None,
    q: Annotated[str | None, Query(description="Substring of the identity or id.")] = None,
    artifact_name: Annotated[str | None, Query(description="Installed artifact name.")] = None,
    artifact_version: Annotated[
        str | None, Query(description="Installed artifact version.")
    ] = None,
    attribute: Annotated[
        list[str],
        Query(description="KEY=VALUE an attribute must equal; repeat to require several."),
    ] = [],  # noqa: B006  # FastAPI copies query defaults
    online: Annotated[
        bool | None, Query(description="Seen within `online_within` seconds (or not).")
    ] = None,
    online_within: Annotated[int, Query(ge=1, le=366 * 86400)] = fleet.ONLINE_WITHIN,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> DevicePage:
    """Devices matching every filter given, newest first."""
    rows, total = await devices.list_devices(
        session,
        status=status,
        device_type=device_type,
        tag=tag,
        q=q,
        artifact_name=artifact_name,
        artifact_version=artifact_version,
        attributes=devices.parse_attribute_filters(attribute),
        seen_since=fleet.online_cutoff(online_within),
        online=online,
        limit=limit,
        offset=offset,
    )
    return DevicePage(items=[device_out(d) for d in rows], total=total)


@router.post("/preauthorize", response_model=DeviceOut, status_code=201)
async def preauthorize(body: PreauthorizeIn, session: Session, audit: Audit) -> DeviceOut:
    """Register a device's identity and key; it is accepted on first contact.

    ``kind`` ddi: identity ``{"controller_id": ...}`` and no key (set its
    TargetToken with ``POST /devices/{id}/target-token``); mender: the
    ``id_data`` identity and the device's public key.
    """
    if body.kind != "native":
        device = await manage.preauthorize(
            session, DeviceKind(body.kind), body.identity, body.public_key, body.device_type
        )
        audit.target_id = device.id
        return device_out(device)
    if not body.public_key:
        raise RequestInvalidError(
            "a native device is preauthorized with its public key", details={"field": "public_key"}
        )
    device = await devices.preauthorize(session, body.identity, body.public_key, body.device_type)
    audit.target_id = device.id
    return device_out(device)


@router.get("/{device_id}", response_model=DeviceOut)
async def get_device(device_id: str, session: Session) -> DeviceOut:
    """One device, with the last version report it signed (``version_report``)."""
    out = device_out(await devices.get_device(session, device_id))
    report = await reports.last_report(session, device_id)
    if report is not None:
        out.version_report = version_report_out(report)
    return out


async def _set_status(
    session: Session, state: State, device_id: str, status: DeviceStatus
) -> DeviceOut:
    device = await devices.set_status(
        session, device_id, status, message=f"{status.value} by an operator"
    )
    # Every process forgets what it knew of this device (fleetcast.server.answers),
    # so a rejected or decommissioned device is refused on its next request.
    state.notifier.notify([device.id], push=False)
    return device_out(device)


@router.post("/{device_id}/accept", response_model=DeviceOut)
async def accept(device_id: str, session: Session, state: State) -> DeviceOut:
    """Accept a device: its next authentication gets a token."""
    return await _set_status(session, state, device_id, DeviceStatus.ACCEPTED)


@router.post("/{device_id}/reject", response_model=DeviceOut)
async def reject(device_id: str, session: Session, state: State) -> DeviceOut:
    """Reject a device: it gets nothing, and its unfinished deployments end for it."""
    return await _set_status(session, state, device_id, DeviceStatus.REJECTED)


@router.post("/{device_id}/decommission", response_model=DeviceOut)
async def decommission(device_id: str, session: Session, state: State) -> DeviceOut:
    """Retire a device for good."""
    return await _set_status(session, state, device_id, DeviceStatus.DECOMMISSIONED)


@router.put("/{device_id}/public-key", response_model=DeviceOut)
async def replace_key(
    device_id: str, body: PublicKeyIn, session: Session, state: State
) -> DeviceOut:
    """Replace a native device's identity key (key rotation, or a device re-flashed
    with a new key): only the new key signs in from now on."""
    device = await devices.replace_key(session, device_id, body.public_key)
    state.notifier.notify([device.id], push=False)
    return device_out(device)


@router.put("/{device_id}/tags", response_model=DeviceOut)
async def set_tags(device_id: str, body: TagsIn, session: Session) -> DeviceOut:
    """Replace the device's tags."""
    return device_out(await devices.set_tags(session, device_id, body.tags))


@router.get("/{device_id}/history", response_model=EventList)
async def history(device_id: str, session: Session) -> EventList:
    """Every status report and admission change, oldest first."""
    return EventList(items=[event_out(e) for e in await devices.history(session, device_id)])
