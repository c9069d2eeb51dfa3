"""Wake long-polling devices when something for them appears.

The rollout code calls :meth:`Notifier.notify` with the devices whose answer
on ``/next`` may have changed (a deployment or phase started, a pause, an
abort). A waiting ``/next`` request holds a :meth:`Notifier.subscribe`
subscription and re-reads the database when woken, and also at least every
``recheck`` seconds, so a notification lost between processes delays an
answer by at most that long.

:class:`LocalNotifier` is in-process; with one process it loses nothing, so
its re-check is only a safety net. Several processes on PostgreSQL use
:class:`fleetcast.server.pgnotify.PgNotifier` (``LISTEN/NOTIFY``), and
:class:`fleetcast.server.mqtt.MqttNotifier` also pushes a "check in now"
notice to devices over MQTT.

Listeners added with :meth:`Notifier.add_listener` see every device id a
notification names, whether it was sent by this process or another one, and
``None`` when notifications may have been missed (the per-process answer
cache of :mod:`fleetcast.server.answers` forgets on both).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

#: Called with the device ids of a notification, or None for "every device".
Listener = Callable[[list[str] | None], None]


class Subscription:
    """A device's interest in notifications; wait on it between database checks."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds``; return whether a notification arrived."""
        try:
            async with asyncio.timeout(max(seconds, 0.0)):
                await self._event.wait()
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True


class Notifier(Protocol):
    """Delivers "your answer may have changed" to waiting devices.

    ``recheck`` is the longest a waiting request goes without re-reading the
    database: short when notifications can be lost, long when they cannot.
    """

    recheck: float

    def notify(self, device_ids: Iterable[str], *, push: bool = True) -> None:
        """Wake every subscription of these devices, in every process.

        ``push=False``: the change concerns the server's view only (a status
        report, an operator's decision), so no MQTT notice goes to the device.
        """
        ...

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` for every notification (see the module docstring)."""
        ...

    def subscribe(self, device_id: str) -> AbstractAsyncContextManager[Subscription]:
        """Subscribe for the duration of an ``async with`` block."""
        ...


class LocalNotifier:
    """In-process notifier: one :class:`Subscription` per waiting request."""

    def __init__(self, *, recheck: float = 1.0) -> None:
        self.recheck = recheck
        self._waiters: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def wake_all(self) -> None:
        """Wake every subscription (after notifications may have been missed)."""
        for listener in self._listeners:
            listener(None)
        for subscriptions in self._waiters.values():
            for subscription in subscriptions:
                subscription.wake()

    def notify(self, device_ids: Iterable[str], *, push: bool = True) -> None:
        ids = list(device_ids)
        if not ids:
            return
        # Listeners first: a woken request must not find a stale cached answer.
        for listener in self._listeners:
            listener(ids)
        for device_id in ids:
            for subscription in self._waiters.get(device_id, ()):
                subscription.wake()

    def subscribe(self, device_id: str) -> AbstractAsyncContextManager[Subscription]:
        return self._subscribe(device_id)

    @asynccontextmanager
    async def _subscribe(self, device_id: str) -> AsyncIterator[Subscription]:
        subscription = Subscription()
        self._waiters[device_id].add(subscription)
        try:
            yield subscription
        finally:
            waiters = self._waiters.get(device_id)
            if waiters is not None:
                waiters.discard(subscription)
                if not waiters:
                    del self._waiters[device_id]

    @property
    def waiting(self) -> int:
        """How many devices are waiting (for tests and metrics)."""
        return len(self._waiters)
