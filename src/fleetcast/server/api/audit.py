"""The audit hook: one dependency every management router declares.

For a request that changes something (any method but GET, HEAD, OPTIONS)
it records an audit event once the route has finished, whatever the
outcome. The action is ``<resource>.<route function>`` (``devices.accept``,
``deployments.create``); the target is the path's id, or what the route
sets on the :class:`AuditTrail` it may ask for (the id of what it created);
the details are the JSON request body, secrets redacted, plus what the route
adds. Upload bodies (not JSON) are never read here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError

from fleetcast.server.api.deps import READ_METHODS, Authenticated, Session
from fleetcast.server.errors import ServerError
from fleetcast.server.services import audit

API_PREFIX: Final = "/api/v1/"
#: JSON request bodies larger than this are not copied into the details.
MAX_BODY_BYTES: Final = 64 * 1024


@dataclass
class AuditTrail:
    """What a route adds to its audit event: the target it created, extra details."""

    target_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def action_of(request: Request) -> str:
    """``<resource>.<route function name>``, from the matched route."""
    route = request.scope.get("route")
    path = str(getattr(route, "path", request.url.path))
    resource = path.removeprefix(API_PREFIX).split("/", 1)[0] or "api"
    return f"{resource}.{getattr(route, 'name', request.method.lower())}"


async def _request_details(request: Request) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if request.query_params:
        details["query"] = dict(request.query_params)
    length = request.headers.get("content-length", "")
    is_json = request.headers.get("content-type", "").startswith("application/json")
    if is_json and length.isdigit() and int(length) <= MAX_BODY_BYTES:
        try:
            body = await request.json()
        except (ValueError, RuntimeError):  # not JSON, or the stream was consumed
            body = None
        if body is not None:
            details["request"] = body
    return details


async def audit_trail(
    request: Request, session: Session, token: Authenticated
) -> AsyncIterator[AuditTrail]:
    """Record the request's management action after the route ran (see the module docstring).

    Routers list it before ``current_admin``: a change refused for the token's
    scope (403) raises inside it and is recorded like any other outcome.

    It writes with the request's own session, after a rollback of whatever the
    route left uncommitted (which closing the session would discard anyway):
    a second session would wait for the first one's SQLite write lock.
    """
    trail = AuditTrail()
    if request.method in READ_METHODS:
        yield trail
        return
    route = request.scope.get("route")
    success_status = int(getattr(route, "status_code", None) or 200)
    # Read now: the rollback below expires the row.
    actor_id, actor_name = token.id, token.name

    async def write(outcome: str, status_code: int) -> None:
        details = {**await _request_details(request), **trail.details}
        path_ids = [str(v) for v in request.path_params.values()]
        await session.rollback()
        await audit.record(
            session,
            actor_id=actor_id,
            actor_name=actor_name,
            client=request.client.host if request.client else None,
            action=action_of(request),
            target_id=trail.target_id or (path_ids[0] if path_ids else None),
            details=details,
            outcome=outcome,
            status_code=status_code,
        )

    try:
        yield trail
    except ServerError as e:
        await write(e.code, e.status_code)
        raise
    except RequestValidationError:
        await write("validation_error", 422)
        raise
    except Exception:
        await write("internal_error", 500)
        raise
    await write("ok", success_status)


Audit = Annotated[AuditTrail, Depends(audit_trail, scope="function")]
