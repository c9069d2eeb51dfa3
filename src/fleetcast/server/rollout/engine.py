"""The rollout engine: moves running deployments from phase to phase.

Each tick, inside one transaction, for every running deployment (oldest
first) it looks at the current phase only:

1. failure rate = failed devices / devices in the phase; above the phase's
   ``max_failure_percent`` (and with failures the operator has not already
   acknowledged by resuming), the deployment is ``paused`` with a reason;
2. when every device of the phase is terminal, ``phase_completed_at`` is
   recorded (once);
3. when the soak time has passed since then, the next phase starts: its
   devices become ``scheduled`` and are notified. After the last phase the
   deployment is ``completed``.

Every decision is derived from rows in the database, so a tick is
idempotent and a restarted server simply continues. Several processes may
run the engine: :func:`try_engine_lock` makes sure only one ticks at a time
(a PostgreSQL transaction-scoped advisory lock; SQLite has one writer anyway).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable
from typing import Final

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.server.db.engine import Database
from fleetcast.server.db.models import Deployment, DeploymentDevice, utcnow
from fleetcast.server.notify import Notifier
from fleetcast.server.rollout.plan import Phase
from fleetcast.server.states import TERMINAL, DeploymentStatus, RolloutState

log = logging.getLogger(__name__)

# Any constant shared by all server processes.
ENGINE_LOCK_KEY: Final = 0x466C6E67


async def try_engine_lock(session: AsyncSession) -> bool:
    """Take the engine lock for the current transaction; False if another process holds it."""
    if session.get_bind().dialect.name == "postgresql":
        locked = await session.scalar(select(func.pg_try_advisory_xact_lock(ENGINE_LOCK_KEY)))
        return bool(locked)
    return True


async def phase_counts(session: AsyncSession, deployment_id: str, phase: int) -> Counter[str]:
    """Devices per state in one phase of a deployment."""
    rows = await session.execute(
        select(DeploymentDevice.state, func.count())
        .where(DeploymentDevice.deployment_id == deployment_id, DeploymentDevice.phase == phase)
        .group_by(DeploymentDevice.state)
    )
    return Counter({state: int(n) for state, n in rows})


async def start_phase(
    session: AsyncSession, deployment: Deployment, phase: int, now: dt.datetime
) -> list[str]:
    """Make ``phase`` current and schedule its devices; return their ids (to notify)."""
    deployment.current_phase = phase
    deployment.phase_started_at = now
    deployment.phase_completed_at = None
    deployment.failures_acknowledged = 0
    result = await session.execute(
        update(DeploymentDevice)
        .where(
            DeploymentDevice.deployment_id == deployment.id,
            DeploymentDevice.phase == phase,
            DeploymentDevice.state == RolloutState.PENDING.value,
        )
        .values(state=RolloutState.SCHEDULED.value, updated_at=now)
        .returning(DeploymentDevice.device_id)
    )
    return list(result.scalars())


async def step(session: AsyncSession, deployment: Deployment, now: dt.datetime) -> list[str]:
    """Apply the rules to one running deployment; return device ids to notify."""
    phases = [Phase.from_dict(p) for p in deployment.phases]
    woken: list[str] = []
    while deployment.status == DeploymentStatus.RUNNING:
        index = deployment.current_phase
        phase = phases[index]
        counts = await phase_counts(session, deployment.id, index)
        members = sum(counts.values())
        failures = counts[RolloutState.FAILURE.value]
        if (
            members
            and failures > deployment.failures_acknowledged
            and failures * 100 > phase.max_failure_percent * members
        ):
            deployment.status = DeploymentStatus.PAUSED.value
            deployment.pause_reason = (
                f"phase {index + 1}: {failures} of {members} devices failed "
                f"({failures * 100 // members}%), more than the allowed "
                f"{phase.max_failure_percent}%"
            )
            log.warning("deployment %s paused: %s", deployment.id, deployment.pause_reason)
            break
        if any(state not in TERMINAL for state, n in counts.items() if n):
            break
        if deployment.phase_completed_at is None:
            deployment.phase_completed_at = now
        if index == len(phases) - 1:
            deployment.status = DeploymentStatus.COMPLETED.value
            deployment.finished_at = now
            log.info("deployment %s completed", deployment.id)
            break
        if now < deployment.phase_completed_at + dt.timedelta(seconds=phase.soak_seconds):
            break
        woken += await start_phase(session, deployment, index + 1, now)
        log.info("deployment %s: phase %d started", deployment.id, index + 2)
    return woken


async def tick(db: Database, notifier: Notifier, *, now: dt.datetime | None = None) -> None:
    """Run the rules once over every running deployment, in one transaction."""
    moment = now or utcnow()
    async with db.sessions() as session:
        if not await try_engine_lock(session):
            return
        running = await session.scalars(
            select(Deployment)
            .where(Deployment.status == DeploymentStatus.RUNNING.value)
            .order_by(Deployment.created_at, Deployment.id)
            .with_for_update(of=Deployment)
        )
        woken: list[str] = []
        for deployment in list(running):
            woken += await step(session, deployment, moment)
        await session.commit()
    notifier.notify(woken)


class RolloutEngine:
    """Runs :func:`tick` every ``interval`` seconds and whenever nudged."""

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        *,
        interval: float,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._db = db
        self._notifier = notifier
        self._interval = interval
        self._clock = clock
        self._nudged = asyncio.Event()

    def nudge(self) -> None:
        """Tick soon (after a status report or a change by the operator)."""
        self._nudged.set()

    async def tick(self) -> None:
        await tick(self._db, self._notifier, now=self._clock())

    async def run(self) -> None:
        """Tick until cancelled; an error in one tick is logged, not fatal."""
        while True:
            try:
                async with asyncio.timeout(self._interval):
                    await self._nudged.wait()
            except TimeoutError:
                pass
            self._nudged.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rollout engine tick failed; retrying next interval")
