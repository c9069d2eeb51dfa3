"""Idle devices answered from memory: no SQL for an unchanged ``/next``, yet never stale.

What a user sees: an idle fleet's polls cost the server an HMAC check, while
a new deployment still reaches a waiting device at once and a decommissioned
device is refused on its next request.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from fleetcast.server.answers import AnswerCache
from fleetcast.server.notify import LocalNotifier
from tests.factories import BuiltArtifact
from tests.server.harness import Server, SimDevice

_counting: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "counting", default=None
)


@contextmanager
def statements_of_this_task(server: Server) -> Iterator[list[str]]:
    """The SQL statements run on behalf of the code inside the block (not background tasks).

    A context variable marks the caller; SQLAlchemy's async bridge carries it
    into the driver's greenlet, background tasks (engine, last-seen) do not have it.
    """
    seen: list[str] = []
    sync_engine = server.state.db.engine.sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        target = _counting.get()
        if target is not None:
            target.append(statement)

    event.listen(sync_engine, "before_cursor_execute", record)
    token = _counting.set(seen)
    try:
        yield seen
    finally:
        _counting.reset(token)
        event.remove(sync_engine, "before_cursor_execute", record)


async def _idle_etag(device: SimDevice) -> str:
    first = await device.next()
    assert first.status_code == 200 and first.json() == {"update": None}
    return first.headers["ETag"]


async def test_an_unchanged_idle_poll_runs_no_sql(server: Server) -> None:
    [device] = await server.fleet(1)
    with statements_of_this_task(server) as cold:
        etag = await _idle_etag(device)
    # The counter sees the request's queries: the first poll reads the database.
    assert cold, "the first poll must read the device and its deployments"
    with statements_of_this_task(server) as warm:
        again = await device.next(etag=etag)
    assert again.status_code == 304 and again.headers["ETag"] == etag
    assert warm == []


async def test_a_new_deployment_reaches_a_cached_idle_device_at_once(
    server: Server, artifact: BuiltArtifact
) -> None:
    """The deployment's notification drops the memory: the very next poll gets the offer."""
    [device] = await server.fleet(1)
    etag = await _idle_etag(device)
    assert (await device.next(etag=etag)).status_code == 304
    uploaded = await server.upload(artifact)
    deployment = await server.deploy(uploaded["id"])
    response = await device.next(etag=etag)
    assert response.status_code == 200
    assert response.json()["update"]["deployment_id"] == deployment["id"]


async def test_a_waiting_long_poll_of_a_cached_device_wakes_with_the_offer(
    server: Server, artifact: BuiltArtifact
) -> None:
    [device] = await server.fleet(1)
    etag = await _idle_etag(device)
    uploaded = await server.upload(artifact)
    poll = asyncio.create_task(device.next(wait=10, etag=etag))
    # The long-poll is waiting once its subscription exists (it was answered from memory).
    for _ in range(200):
        if server.state.notifier.waiting:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    assert not poll.done()
    deployment = await server.deploy(uploaded["id"])
    response = await poll
    assert response.status_code == 200
    assert response.json()["update"]["deployment_id"] == deployment["id"]


async def test_a_status_report_drops_the_memory_of_the_device(
    server: Server, artifact: BuiltArtifact
) -> None:
    """A device busy in a paused deployment waits; once it gives that one up, the next comes."""
    [device] = await server.fleet(1)
    uploaded = await server.upload(artifact)
    first = await server.deploy(uploaded["id"], name="first")
    offer = await device.offer()
    assert offer is not None and offer.deployment_id == first["id"]
    assert (await device.report(first["id"], "downloading")).status_code == 204
    assert (await server.admin.post(f"/api/v1/deployments/{first['id']}/pause")).is_success
    second = await server.deploy(uploaded["id"], name="second")
    etag = await _idle_etag(device)  # busy in the paused one: nothing, remembered
    assert (await device.next(etag=etag)).status_code == 304
    assert (await device.report(first["id"], "failure")).status_code == 204
    response = await device.next(etag=etag)
    assert response.status_code == 200
    assert response.json()["update"]["deployment_id"] == second["id"]


async def test_a_decommissioned_device_is_refused_on_its_next_poll(server: Server) -> None:
    """The operator's decision is a notification: refused at once, not after the TTL."""
    rejected, retired = await server.fleet(2)
    for device in (rejected, retired):
        etag = await _idle_etag(device)
        assert (await device.next(etag=etag)).status_code == 304
    assert (await server.admin.post(f"/api/v1/devices/{rejected.device_id}/reject")).is_success
    assert (await server.admin.post(f"/api/v1/devices/{retired.device_id}/decommission")).is_success
    for device in (rejected, retired):
        refused = await device.next(etag=etag)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "device_rejected"


async def test_a_forged_token_is_refused_without_the_database(server: Server) -> None:
    [device] = await server.fleet(1)
    etag = await _idle_etag(device)
    assert device.token is not None
    device_id, expiry, mac = device.token.split(".")
    forged = f"{device_id}.{int(expiry) + 3600}.{mac}"
    with statements_of_this_task(server) as sql:
        response = await server.http.get(
            "/api/device/v1/next",
            headers={"Authorization": f"Bearer {forged}", "If-None-Match": etag},
        )
    assert response.status_code == 401 and sql == []


# ---------------------------------------------------------------- the cache alone


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_is_trusted_for_ttl_seconds_only() -> None:
    """The documented bound when a notification is lost: ``idle_cache_ttl``."""
    clock = FakeClock()
    cache = AnswerCache(size=10, ttl=30.0, clock=clock)
    cache.put("d1", None, cache.generation)
    clock.now += 29.9
    assert cache.get("d1") is not None
    clock.now += 0.2
    assert cache.get("d1") is None


def test_a_read_older_than_an_invalidation_is_not_stored() -> None:
    """A request that read "nothing" before a deployment committed must not cache it."""
    cache = AnswerCache(size=10, ttl=30.0)
    generation = cache.generation
    cache.invalidate(["d1"])
    cache.put("d1", None, generation)
    assert cache.get("d1") is None
    cache.put("d1", None, cache.generation)
    assert cache.get("d1") is not None


def test_the_least_recently_used_device_goes_first() -> None:
    cache = AnswerCache(size=2, ttl=30.0)
    seen = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    for device_id in ("a", "b"):
        cache.put(device_id, seen, cache.generation)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", seen, cache.generation)
    assert len(cache) == 2 and cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None


def test_size_zero_disables_the_cache() -> None:
    cache = AnswerCache(size=0, ttl=30.0)
    cache.put("a", None, cache.generation)
    assert cache.get("a") is None


def test_notifications_and_missed_notifications_reach_the_cache() -> None:
    notifier = LocalNotifier()
    cache = AnswerCache(size=10, ttl=30.0)
    notifier.add_listener(cache.invalidate)
    for device_id in ("a", "b"):
        cache.put(device_id, None, cache.generation)
    notifier.notify(iter(["a"]), push=False)  # a generator, as the deployment service passes
    assert cache.get("a") is None and cache.get("b") is not None
    notifier.wake_all()
    assert len(cache) == 0
