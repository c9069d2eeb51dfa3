"""A deployment phase's offers, read in bulk and remembered before its devices ask.

When a phase starts, every device it wakes checks in within seconds (MQTT
push, long-polls). One at a time, each check-in costs a device lookup, a
membership query and an offer: a few hundred per second, while a phase of
100,000 devices must be answered within a minute. So the first device that
gets a stable offer (:func:`fleetcast.server.services.updates.offer_is_stable`:
a full artifact, no delta possible, no per-device key) makes this process
read the whole phase's stable offers in one keyset-paginated pass
(:func:`~fleetcast.server.services.updates.phase_offers`) into its answer
memory (:class:`~fleetcast.server.answers.AnswerCache`), and check-ins that
miss the memory meanwhile wait for that read (a few seconds at most) instead
of adding their own queries. A notification naming many devices (a phase
started, or resumed) starts that read at once, before its devices ask: the
primer listens to the notifier after the answer memory, so a device woken by
it finds the read in progress and waits for it.

A device notified while the read runs (its status report, a pause, an abort)
is not remembered from it: :meth:`AnswerCache.reading` tracks them. Every
process primes itself, from its own first stable offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

from fleetcast.server.answers import Answer, AnswerCache, encode_answer
from fleetcast.server.db.engine import Database
from fleetcast.server.services import updates
from fleetcast.server.settings import Settings

log = logging.getLogger(__name__)

#: Devices a notification must name to trigger a read before any device asks.
BULK_NOTIFICATION: Final = 100
#: Devices of such a notification looked up to find its deployments.
_SAMPLE: Final = 3


class OfferPrimer:
    """Reads deployment phases' offers in bulk into ``answers``, one phase at a time.

    Args:
        db: the database.
        answers: the memory to fill.
        settings: the server's settings (delta policy, public URL).
        patience: the longest a missing check-in waits for a read in progress.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        db: Database,
        answers: AnswerCache,
        settings: Settings,
        *,
        patience: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._answers = answers
        self._settings = settings
        self._patience = patience
        self._clock = clock
        #: (deployment id, phase) -> when its read began; read again after the memory's TTL.
        self._read: dict[tuple[str, int], float] = {}
        self._queue: list[tuple[str, int]] = []
        #: Samples of the devices of large notifications, to find their deployments.
        self._around: list[list[str]] = []
        #: A notification naming at least this many devices triggers a read.
        self.bulk = BULK_NOTIFICATION
        self._task: asyncio.Task[None] | None = None
        #: Devices remembered by reads so far (for the logs and the tests).
        self.primed = 0

    def prime(self, deployment_id: str, phase: int) -> None:
        """Read this phase's offers, unless that was done within the memory's TTL."""
        if self._answers.size <= 0:
            return
        key = (deployment_id, phase)
        if self._recent(key) or key in self._queue:
            return
        self._queue.append(key)
        self._start()

    def on_notification(self, device_ids: list[str] | None) -> None:
        """A notifier listener: a notification naming many devices is probably a phase
        that started; read its offers before the woken devices ask (they wait for it)."""
        if device_ids is None or len(device_ids) < self.bulk or self._answers.size <= 0:
            return
        self._around.append(device_ids[:_SAMPLE])
        self._start()

    def _recent(self, key: tuple[str, int]) -> bool:
        began = self._read.get(key)
        return began is not None and self._clock() - began < self._answers.ttl

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="fleetcast-offer-primer")

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def settled(self) -> None:
        """Wait until no read is in progress, at most ``patience`` seconds."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=self._patience)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while self._around or self._queue:
            if self._around:
                sample = self._around.pop(0)
                try:
                    async with self._db.sessions() as session:
                        started = await updates.started_phases(session, sample)
                except Exception:
                    log.exception("could not find the deployments of a notification")
                    continue
                for key in started:
                    # Read again even if read lately: the notification just dropped
                    # these devices' answers (a phase resumed, say).
                    if key not in self._queue:
                        self._queue.append(key)
                continue
            deployment_id, phase = key = self._queue[0]
            now = self._clock()
            # Forget reads older than the memory's TTL: they would be read again anyway.
            self._read = {k: t for k, t in self._read.items() if now - t < self._answers.ttl}
            self._read[key] = now
            try:
                count = await self._read_phase(deployment_id)
            except Exception:
                # Only a cost: every device still gets its answer from the database.
                log.exception("could not read the offers of deployment %s in bulk", deployment_id)
            else:
                self.primed += count
                log.info(
                    "remembered %d offers of deployment %s, phase %d", count, deployment_id, phase
                )
            finally:
                self._queue.pop(0)

    async def _read_phase(self, deployment_id: str) -> int:
        count = 0
        encoded: dict[tuple[str, str], Answer] = {}
        with self._answers.reading() as reading:
            async with self._db.sessions() as session:
                chunks = updates.phase_offers(session, deployment_id, self._settings)
                async for chunk in chunks:
                    # Short transactions: on SQLite, an open one would hold the write lock.
                    await session.commit()
                    for found in chunk:
                        offer = found.offer
                        key = (offer.deployment_id, offer.artifact_id)
                        if key not in encoded:
                            encoded[key] = encode_answer(offer)
                        self._answers.put_read(
                            reading, found.device_id, found.last_seen_at, encoded[key]
                        )
                    count += len(chunk)
        return count
