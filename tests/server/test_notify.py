"""The in-process notifier that wakes long-polls."""

from __future__ import annotations

import asyncio

from fleetcast.server.notify import LocalNotifier


async def test_notify_wakes_only_the_named_device() -> None:
    notifier = LocalNotifier()
    async with notifier.subscribe("a") as a, notifier.subscribe("b") as b:
        waiting_a = asyncio.create_task(a.wait(5))
        waiting_b = asyncio.create_task(b.wait(0.2))
        await asyncio.sleep(0)
        notifier.notify(["a"])
        assert await asyncio.wait_for(waiting_a, 1) is True
        assert await waiting_b is False
    assert notifier.waiting == 0


async def test_a_notification_before_waiting_is_not_lost() -> None:
    notifier = LocalNotifier()
    async with notifier.subscribe("a") as a:
        notifier.notify(["a"])
        assert await a.wait(0.01) is True
        assert await a.wait(0.01) is False  # consumed
