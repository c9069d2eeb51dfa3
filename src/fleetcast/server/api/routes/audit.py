"""Management API: the audit log (``/api/v1/audit``), read-only for every token scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from fleetcast.server.api.deps import Session, current_admin
from fleetcast.server.api.schemas import AuditEventList, AuditEventOut, ErrorResponse
from fleetcast.server.services import audit

router = APIRouter(
    prefix="/api/v1/audit",
    tags=["audit"],
    dependencies=[Depends(current_admin, scope="function")],
    responses={401: {"model": ErrorResponse}},
)


@router.get("", response_model=AuditEventList)
async def list_audit_events(
    session: Session,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=2**62, description="Only events older than this id.")
    ] = None,
    actor: Annotated[str | None, Query(description="The API token's id or name.")] = None,
    action: Annotated[
        str | None,
        Query(description="An action (devices.accept), or a resource and a dot (devices.)."),
    ] = None,
) -> AuditEventList:
    """Management actions, newest first. There is no way to change or delete them."""
    rows = await audit.list_events(session, limit=limit, before=before, actor=actor, action=action)
    return AuditEventList(
        items=[AuditEventOut.model_validate(row, from_attributes=True) for row in rows],
        next_before=rows[-1].id if len(rows) == limit else None,
    )
