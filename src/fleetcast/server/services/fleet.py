"""The fleet at a glance: counts for a dashboard, derived from existing rows.

"Online" has no column of its own: a device is online when it was seen
(``last_seen_at``, written by ``/next`` and ``/inventory`` at most every
``LAST_SEEN_GRANULARITY``) within a window the caller chooses. The window
must therefore be longer than that granularity plus the agents' poll
interval, or idle but healthy devices flicker offline.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.server.db.models import Deployment, Device, utcnow
from fleetcast.server.states import DeviceStatus

#: Default online window, in seconds: ten times ``LAST_SEEN_GRANULARITY``.
ONLINE_WITHIN: Final = 300


@dataclass(frozen=True)
class FleetSummary:
    """Counts over the whole fleet; "the fleet" is the accepted devices."""

    online_within: int
    by_status: dict[str, int] = field(default_factory=dict)
    online: int = 0
    never_seen: int = 0
    versions: list[tuple[str | None, str | None, int]] = field(default_factory=list)
    device_types: list[tuple[str, int]] = field(default_factory=list)
    deployments: dict[str, int] = field(default_factory=dict)

    @property
    def devices(self) -> int:
        return self.by_status.get(DeviceStatus.ACCEPTED.value, 0)

    @property
    def offline(self) -> int:
        return self.devices - self.online


def online_cutoff(online_within: int, now: dt.datetime | None = None) -> dt.datetime:
    """Devices seen at or after this instant count as online."""
    return (now or utcnow()) - dt.timedelta(seconds=online_within)


async def summarize(
    session: AsyncSession, *, online_within: int = ONLINE_WITHIN, now: dt.datetime | None = None
) -> FleetSummary:
    """Count devices per status, online/offline, installed version and type, and deployments.

    A handful of grouped queries; none returns a row per device.
    """
    by_status = {
        str(status): int(n)
        for status, n in await session.execute(
            select(Device.status, func.count()).group_by(Device.status)
        )
    }
    accepted = Device.status == DeviceStatus.ACCEPTED.value
    cutoff = online_cutoff(online_within, now)
    seen = (
        await session.execute(
            select(
                func.count(case((Device.last_seen_at >= cutoff, 1))),
                func.count(case((Device.last_seen_at.is_(None), 1))),
            ).where(accepted)
        )
    ).one()
    versions = [
        (name, version, int(n))
        for name, version, n in await session.execute(
            select(Device.artifact_name, Device.artifact_version, func.count())
            .where(accepted)
            .group_by(Device.artifact_name, Device.artifact_version)
        )
    ]
    # Most devices first; "nothing installed yet" after real versions with as many.
    versions.sort(key=lambda v: (-v[2], v[0] is None, v[0] or "", v[1] or ""))
    device_types = [
        (str(device_type), int(n))
        for device_type, n in await session.execute(
            select(Device.device_type, func.count()).where(accepted).group_by(Device.device_type)
        )
    ]
    device_types.sort(key=lambda t: (-t[1], t[0]))
    deployments = {
        str(status): int(n)
        for status, n in await session.execute(
            select(Deployment.status, func.count()).group_by(Deployment.status)
        )
    }
    return FleetSummary(
        online_within=online_within,
        by_status=by_status,
        online=int(seen[0]),
        never_seen=int(seen[1]),
        versions=versions,
        device_types=device_types,
        deployments=deployments,
    )
