"""Request dependencies, as ``Annotated`` types routes declare in their signatures.

Every dependency that touches the database ends before the response is
sent (``scope="function"``): a download or a long-poll must not hold a
database connection, let alone SQLite's write lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.server.db.models import AdminToken, Device
from fleetcast.server.runtime import ServerState
from fleetcast.server.services.admission import device_for_token
from fleetcast.server.services.credentials import TokenScope, check_admin_token, require_scope

_admin_bearer = HTTPBearer(
    auto_error=False, scheme_name="AdminToken", description="Admin API token"
)
_device_bearer = HTTPBearer(
    auto_error=False, scheme_name="DeviceToken", description="Device token from POST /auth"
)


def get_state(request: Request) -> ServerState:
    return cast("ServerState", request.app.state.fleetcast)


State = Annotated[ServerState, Depends(get_state)]


async def get_session(state: State) -> AsyncIterator[AsyncSession]:
    async with state.db.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


#: Methods a read-only token may use: the management API changes nothing on them.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def authenticated_admin(
    session: Session,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> AdminToken:
    """The management token of the request, whatever its scope (raises UnauthorizedError)."""
    token = await check_admin_token(session, credentials.credentials if credentials else None)
    # End the read transaction now: the route opens its own.
    await session.commit()
    return token


Authenticated = Annotated[AdminToken, Depends(authenticated_admin, scope="function")]


async def current_admin(request: Request, token: Authenticated) -> AdminToken:
    """The management token of the request; a change needs at least the operator scope.

    Raises UnauthorizedError without a valid token, ForbiddenError when a
    read-only token asks for anything but a read. Routers list the audit
    dependency before this one, so such a refused change is audited too.
    """
    if request.method not in READ_METHODS:
        require_scope(token, TokenScope.OPERATOR)
    return token


Admin = Annotated[AdminToken, Depends(current_admin, scope="function")]


async def admin_scope(token: Admin) -> AdminToken:
    """The management token of the request, which must have the admin scope (ForbiddenError)."""
    require_scope(token, TokenScope.ADMIN)
    return token


AdminScope = Annotated[AdminToken, Depends(admin_scope, scope="function")]


async def current_device(
    session: Session,
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_device_bearer)],
) -> Device:
    """The accepted device of the request (raises UnauthorizedError / DeviceRejectedError)."""
    device = await device_for_token(
        session, state.admission.signer, credentials.credentials if credentials else None
    )
    await session.commit()
    return device


CurrentDevice = Annotated[Device, Depends(current_device, scope="function")]


def device_bearer(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_device_bearer)],
) -> str | None:
    """The raw device token of the request, not checked yet (for ``/next``'s idle path)."""
    return credentials.credentials if credentials else None


DeviceBearer = Annotated[str | None, Depends(device_bearer)]
