"""The audit log: an append-only record of every management action.

Each row says who (the API token's id and name, and the client address),
what (an action such as ``devices.accept``, the target's id and a compact
JSON of the request with secrets redacted), when, and how it ended
(``ok`` or the error code, with the HTTP status). Rows are only ever
inserted; there is no API to change or delete them, and migration 0004
adds database triggers that refuse ``UPDATE`` and ``DELETE``.
"""

from __future__ import annotations

import json
from typing import Any, Final

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.server.db.models import AuditEvent

#: Request fields whose value is never stored (a key containing any of these words).
SECRET_WORDS: Final = ("token", "secret", "password", "private")
REDACTED: Final = "[redacted]"
#: Largest JSON of details stored; a larger one is replaced by a note saying so.
MAX_DETAILS_BYTES: Final = 4096


def redact(value: Any) -> Any:
    """``value`` with every secret-looking field's value replaced by ``[redacted]``."""
    if isinstance(value, dict):
        return {
            str(k): REDACTED if any(word in str(k).lower() for word in SECRET_WORDS) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def compact(details: dict[str, Any]) -> dict[str, Any]:
    """Redacted ``details``, or a note when they would take more than ``MAX_DETAILS_BYTES``."""
    safe: dict[str, Any] = redact(details)
    size = len(json.dumps(safe, separators=(",", ":"), default=str))
    if size > MAX_DETAILS_BYTES:
        return {"truncated": True, "size": size}
    return safe


async def record(
    session: AsyncSession,
    *,
    actor_id: str,
    actor_name: str,
    client: str | None,
    action: str,
    target_id: str | None,
    details: dict[str, Any],
    outcome: str,
    status_code: int,
) -> AuditEvent:
    """Append one audit event and commit it."""
    row = AuditEvent(
        actor_id=actor_id,
        actor_name=actor_name,
        client=client[:64] if client else None,
        action=action[:64],
        target_id=target_id[:128] if target_id else None,
        details=json.loads(json.dumps(compact(details), default=str)),
        outcome=outcome[:64],
        status_code=status_code,
    )
    session.add(row)
    await session.commit()
    return row


async def list_events(
    session: AsyncSession,
    *,
    limit: int,
    before: int | None = None,
    actor: str | None = None,
    action: str | None = None,
) -> list[AuditEvent]:
    """Audit events, newest first.

    Args:
        limit: at most this many.
        before: only events with a smaller id (the previous page's last id).
        actor: the token's id or name.
        action: an action (``devices.accept``), or a resource ending in a dot
            (``devices.``) for all of its actions.
    """
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    if actor is not None:
        query = query.where(or_(AuditEvent.actor_id == actor, AuditEvent.actor_name == actor))
    if action is not None:
        if action.endswith("."):
            query = query.where(AuditEvent.action.startswith(action, autoescape=True))
        else:
            query = query.where(AuditEvent.action == action)
    return list(await session.scalars(query))
