"""Management API: its own bearer tokens and their scopes (``/api/v1/tokens``).

Scopes: ``read-only`` may only read, ``operator`` may change everything but
tokens, ``admin`` may do everything. Every token may read ``/tokens/me``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from fleetcast.server.api.audit import Audit, audit_trail
from fleetcast.server.api.deps import Admin, AdminScope, Session, current_admin
from fleetcast.server.api.schemas import ErrorResponse, NewTokenOut, TokenIn, TokenList, TokenOut
from fleetcast.server.api.views import token_out
from fleetcast.server.services import credentials
from fleetcast.server.services.credentials import TokenScope

router = APIRouter(
    prefix="/api/v1/tokens",
    tags=["API tokens"],
    dependencies=[
        Depends(audit_trail, scope="function"),
        Depends(current_admin, scope="function"),
    ],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)


@router.get("/me", response_model=TokenOut)
async def me(token: Admin) -> TokenOut:
    """The token of this request: its name and scope (what a console may offer)."""
    return token_out(token)


@router.post("", response_model=NewTokenOut, status_code=201)
async def create(body: TokenIn, session: Session, _admin: AdminScope, audit: Audit) -> NewTokenOut:
    """Create a token (admin scope only); its plaintext is in this answer and nowhere else."""
    row, plaintext = await credentials.issue_admin_token(session, body.name, TokenScope(body.scope))
    await session.commit()
    audit.target_id = row.id
    return NewTokenOut(token=plaintext, **token_out(row).model_dump())


@router.get("", response_model=TokenList)
async def list_tokens(session: Session, _admin: AdminScope) -> TokenList:
    """Every token's id, name and scope (admin scope only)."""
    return TokenList(items=[token_out(t) for t in await credentials.list_admin_tokens(session)])


@router.delete(
    "/{token_id}",
    status_code=204,
    responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
)
async def revoke(token_id: str, session: Session, _admin: AdminScope) -> None:
    """Revoke a token (admin scope only); the last admin token cannot be revoked."""
    await credentials.revoke_admin_token(session, token_id)
