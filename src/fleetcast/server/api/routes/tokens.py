"""Management API: enrollment tokens (``/api/v1/enrollment-tokens``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from fleetcast.server.api.audit import audit_trail
from fleetcast.server.api.deps import Session, current_admin
from fleetcast.server.api.schemas import EnrollmentTokenIn, EnrollmentTokenOut, ErrorResponse
from fleetcast.server.services import credentials
from fleetcast.server.services.devices import check_tags

router = APIRouter(
    prefix="/api/v1/enrollment-tokens",
    tags=["enrollment tokens"],
    dependencies=[
        Depends(audit_trail, scope="function"),
        Depends(current_admin, scope="function"),
    ],
    responses={401: {"model": ErrorResponse}},
)


@router.post("", response_model=EnrollmentTokenOut, status_code=201)
async def create(body: EnrollmentTokenIn, session: Session) -> EnrollmentTokenOut:
    """A token devices present at ``/auth`` to be accepted at once (any number until it expires)."""
    token, expires_at = await credentials.create_enrollment_token(
        session, expires_in=body.expires_in, tags=check_tags(body.tags)
    )
    return EnrollmentTokenOut(token=token, expires_at=expires_at)
