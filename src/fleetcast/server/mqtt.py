"""Push over MQTT: tell devices to check in now, instead of waiting for their next poll.

With ``--mqtt-url`` every notification (a deployment or a phase starts, a
deployment is resumed, paused or aborted) is also published to each
affected device's topic, ``{prefix}/devices/{device_id}/check-in``, by the
process that made the change. Agents that subscribe to their topic check
in at once; the others find out on their next (long-)poll.

The notice carries no instructions, just the fixed payload
:data:`fleetcast.core.push.CHECK_IN_PAYLOAD`: what to install still comes from the
authenticated ``GET /next``, so a forged notice only causes one harmless
check-in. Messages are QoS 0 and not retained; while the broker is
unreachable the publisher reconnects with backoff and drops what it could
not send (the devices' polls are the fallback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Final

import aiomqtt

from fleetcast.core.push import CHECK_IN_PAYLOAD, BrokerAddress, device_topic
from fleetcast.server.notify import Listener, Notifier, Subscription
from fleetcast.server.pgnotify import PgNotifier

log = logging.getLogger(__name__)

_RETRY_DELAYS: Final = (0.5, 1.0, 2.0, 5.0, 10.0)


class MqttPublisher:
    """Publishes check-in notices from a queue, on one connection per server process."""

    def __init__(self, url: str, *, topic_prefix: str) -> None:
        self.address = BrokerAddress.parse(url)
        self.topic_prefix = topic_prefix
        self.published = 0
        self._queue: asyncio.Queue[list[str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    def publish(self, device_ids: list[str]) -> None:
        """Queue a check-in notice for each device (sent by the background task)."""
        if device_ids:
            self._queue.put_nowait(device_ids)

    async def start(self, wait: float = 5.0) -> None:
        """Connect in the background; wait up to ``wait`` seconds for the first connection."""
        self._task = asyncio.create_task(self._run(), name="fleetcast-mqtt-publisher")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._connected.wait()
        if not self._connected.is_set():
            log.warning(
                "MQTT broker %s:%d not reachable yet; devices fall back to polling",
                self.address.host,
                self.address.port,
            )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        failures = 0
        address = self.address
        while True:
            try:
                async with aiomqtt.Client(
                    address.host,
                    address.port,
                    username=address.username,
                    password=address.password,
                    identifier=f"fleetcast-server-{os.getpid()}-{id(self):x}",
                    tls_context=ssl.create_default_context() if address.tls else None,
                    max_queued_outgoing_messages=None,
                ) as client:
                    failures = 0
                    self._connected.set()
                    while True:
                        ids = await self._queue.get()
                        for device_id in ids:
                            await client.publish(
                                device_topic(self.topic_prefix, device_id),
                                CHECK_IN_PAYLOAD,
                                qos=0,
                            )
                        self.published += len(ids)
            except aiomqtt.MqttError as e:
                self._connected.clear()
                delay = _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("MQTT publisher: %s; reconnecting in %ss", e, delay)
                await asyncio.sleep(delay)


class MqttNotifier:
    """A :class:`~fleetcast.server.notify.Notifier` that also publishes check-in notices.

    Long-polls are woken by ``inner`` (in-process or ``LISTEN/NOTIFY``); devices
    listening on MQTT get a notice from ``publisher``.
    """

    def __init__(self, inner: Notifier, publisher: MqttPublisher) -> None:
        self.inner = inner
        self.publisher = publisher
        self.recheck = inner.recheck

    def notify(self, device_ids: Iterable[str], *, push: bool = True) -> None:
        ids = list(device_ids)
        if push and isinstance(self.inner, PgNotifier):
            # Published only once every other process was told: a woken device
            # must not get another process's stale "nothing to do" from memory.
            self.inner.notify_then(ids, lambda: self.publisher.publish(ids))
            return
        self.inner.notify(ids)
        if push:
            self.publisher.publish(ids)

    def add_listener(self, listener: Listener) -> None:
        self.inner.add_listener(listener)

    def subscribe(self, device_id: str) -> AbstractAsyncContextManager[Subscription]:
        return self.inner.subscribe(device_id)
