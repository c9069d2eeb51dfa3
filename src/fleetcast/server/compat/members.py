"""One change both compatibility APIs make outside a status report: a device stopped for an abort.

When a device acknowledges that its deployment was aborted (a DDI client
closing a ``cancelAction``; a Mender client giving up after a 409), its
unfinished membership becomes ``aborted`` with a history entry, so the
operator sees that the device stopped rather than an update stuck halfway.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.server.db.models import DeploymentDevice, Device, utcnow
from fleetcast.server.services.devices import add_event
from fleetcast.server.states import TERMINAL, RolloutState


def stop_member(
    session: AsyncSession, device: Device, member: DeploymentDevice, message: str
) -> bool:
    """Mark an unfinished membership ``aborted``; return whether it changed (caller commits)."""
    if RolloutState(member.state) in TERMINAL:
        return False
    member.state = RolloutState.ABORTED.value
    member.last_message = message
    member.updated_at = utcnow()
    add_event(
        session,
        device.id,
        kind="status",
        state=RolloutState.ABORTED.value,
        message=message,
        deployment_id=member.deployment_id,
    )
    return True
