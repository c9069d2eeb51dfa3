"""Idle devices answered from memory: no SQL for an unchanged ``/next``, yet never stale.

What a user sees: an idle fleet's polls cost the server an HMAC check, while
a new deployment still reaches a waiting device at once and a decommissioned
device is refused on its next request.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from fleetcast.server.answers import IDLE, AnswerCache
from fleetcast.server.api.deps import get_session
from fleetcast.server.notify import LocalNotifier
from fleetcast.server.services.credentials import DeviceTokenSigner
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
    cache.put("d1", None, cache.generation, IDLE)
    clock.now += 29.9
    assert cache.get("d1") is not None
    clock.now += 0.2
    assert cache.get("d1") is None


def test_a_read_older_than_an_invalidation_is_not_stored() -> None:
    """A request that read "nothing" before a deployment committed must not cache it."""
    cache = AnswerCache(size=10, ttl=30.0)
    generation = cache.generation
    cache.invalidate(["d1"])
    cache.put("d1", None, generation, IDLE)
    assert cache.get("d1") is None
    cache.put("d1", None, cache.generation, IDLE)
    assert cache.get("d1") is not None


def test_the_least_recently_used_device_goes_first() -> None:
    cache = AnswerCache(size=2, ttl=30.0)
    seen = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    for device_id in ("a", "b"):
        cache.put(device_id, seen, cache.generation, IDLE)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", seen, cache.generation, IDLE)
    assert len(cache) == 2 and cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None


def test_size_zero_disables_the_cache() -> None:
    cache = AnswerCache(size=0, ttl=30.0)
    cache.put("a", None, cache.generation, IDLE)
    assert cache.get("a") is None


def test_notifications_and_missed_notifications_reach_the_cache() -> None:
    notifier = LocalNotifier()
    cache = AnswerCache(size=10, ttl=30.0)
    notifier.add_listener(cache.invalidate)
    for device_id in ("a", "b"):
        cache.put(device_id, None, cache.generation, IDLE)
    notifier.notify(iter(["a"]), push=False)  # a generator, as the deployment service passes
    assert cache.get("a") is None and cache.get("b") is not None
    notifier.wake_all()
    assert len(cache) == 0


@contextmanager
def no_route_dependencies(server: Server) -> Iterator[None]:
    """Inside the block, any request that reaches a route needing a database session fails."""

    async def refuse() -> Any:
        raise AssertionError("the request reached the route")
        yield  # pragma: no cover  (a generator dependency, like the real one)

    server.app.dependency_overrides[get_session] = refuse
    try:
        yield
    finally:
        server.app.dependency_overrides.pop(get_session, None)


async def test_an_idle_poll_is_answered_before_routing(server: Server) -> None:
    """The remembered answer is pre-encoded bytes: no routing, dependencies or JSON."""
    [device] = await server.fleet(1)
    etag = await _idle_etag(device)
    route = await device.next()  # the route's own memory answer, for comparison
    with no_route_dependencies(server):
        not_modified = await device.next(etag=etag)
        full = await device.get("/next")  # no If-None-Match: the whole "nothing" answer
        other = await device.next(etag='"an-older-answer"')
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["ETag"] == etag
    assert not_modified.headers["Cache-Control"] == "private, no-cache"
    for response in (full, other):
        assert response.status_code == 200
        assert response.content == route.content
        assert response.json() == {"update": None}
        for name in ("ETag", "Cache-Control", "Content-Type", "Content-Length"):
            assert response.headers[name] == route.headers[name], name


async def test_a_renewed_token_is_checked_once_then_remembered(server: Server) -> None:
    """A device that signs in again polls with a new token: one HMAC, no database."""
    [device] = await server.fleet(1)
    etag = await _idle_etag(device)
    assert device.device_id is not None
    old = device.token
    device.token = server.state.admission.signer.issue(device.device_id, 7200)
    assert device.token != old
    with statements_of_this_task(server) as sql, no_route_dependencies(server):
        assert (await device.next(etag=etag)).status_code == 304
    assert sql == []
    entry = server.state.answers.get(device.device_id)
    assert entry is not None and entry.token == device.token


async def test_an_expired_token_of_a_remembered_device_is_refused(server: Server) -> None:
    """Memory never outlives the token: an expired one goes to the route, which says 401."""
    [device] = await server.fleet(1)
    etag = await _idle_etag(device)
    assert device.device_id is not None
    signer = server.state.admission.signer
    expired = signer.issue(device.device_id, 60, now=time.time() - 3600)
    response = await server.http.get(
        "/api/device/v1/next",
        headers={"Authorization": f"Bearer {expired}", "If-None-Match": etag},
    )
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


async def test_a_long_poll_is_not_answered_from_memory_before_its_time(server: Server) -> None:
    """With ``wait`` and nothing new, the poll is held (by the route), not answered at once."""
    [device] = await server.fleet(1)
    etag = await _idle_etag(device)
    poll = asyncio.create_task(device.next(wait=4, etag=etag))
    for _ in range(200):
        if server.state.notifier.waiting:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    assert server.state.notifier.waiting == 1  # type: ignore[attr-defined]
    assert device.device_id is not None
    server.state.notifier.notify([device.device_id], push=False)
    assert (await poll).status_code == 304


async def test_an_idle_poll_answered_from_memory_records_last_seen(server: Server) -> None:
    [device] = await server.fleet(1)
    etag = await _idle_etag(device)
    assert device.device_id is not None
    entry = server.state.answers.get(device.device_id)
    assert entry is not None
    await server.state.last_seen.flush()
    entry.last_seen = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    with no_route_dependencies(server):
        assert (await device.next(etag=etag)).status_code == 304
    assert server.state.last_seen.pending == 1
    assert entry.last_seen.year > 2020


def test_the_token_memory_needs_a_valid_token() -> None:
    """A remembered device with a forged or foreign token is not answered from memory."""
    cache = AnswerCache(size=10, ttl=60, clock=lambda: 0.0)
    signer = DeviceTokenSigner(b"k" * 32)
    other = DeviceTokenSigner(b"o" * 32)
    cache.put("dev-1", None, cache.generation, IDLE)
    good = signer.issue("dev-1", 60)
    assert cache.for_token(other.issue("dev-1", 60), signer) is None
    assert cache.for_token(good, signer) is not None
    assert cache.for_token(good + "0", signer) is None
    assert cache.for_token(signer.issue("dev-2", 60), signer) is None
    assert cache.for_token("dev-1.\u0663.x", signer) is None


# ------------------------------------------------------------------ download authorisation


async def test_a_remembered_device_downloads_a_remembered_artifact_without_sql(
    server: Server, artifact: BuiltArtifact
) -> None:
    """The first download reads the device and the artifact; the next (a resume) runs no
    SQL at all, and is the same file: authorisation comes from memory."""
    [device] = await server.fleet(1)
    uploaded = await server.upload(artifact)
    path = f"/artifacts/{uploaded['id']}/download"
    first = await device.get(path)
    assert first.status_code == 200 and first.content == artifact.path.read_bytes()
    with statements_of_this_task(server) as statements:
        resumed = await device.get(path, headers={"Range": "bytes=100-"})
    assert resumed.status_code == 206
    assert resumed.content == first.content[100:]
    assert resumed.headers["ETag"] == first.headers["ETag"]
    assert statements == []


async def test_a_rejected_device_is_refused_its_next_download_at_once(
    server: Server, artifact: BuiltArtifact
) -> None:
    """Remembered as accepted, then rejected by the operator: the notification drops the
    memory, so the very next download is refused (not after the TTL)."""
    rejected, other = await server.fleet(2)
    uploaded = await server.upload(artifact)
    path = f"/artifacts/{uploaded['id']}/download"
    for device in (rejected, other):
        assert (await device.get(path)).status_code == 200
    assert (await server.admin.post(f"/api/v1/devices/{rejected.device_id}/reject")).is_success
    refused = await rejected.get(path)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "device_rejected"
    assert (await other.get(path)).status_code == 200


async def test_a_remembered_device_is_still_refused_an_unknown_artifact(
    server: Server, artifact: BuiltArtifact
) -> None:
    """Memory authorises the device, never an artifact the database does not hold."""
    [device] = await server.fleet(1)
    uploaded = await server.upload(artifact)
    assert (await device.get(f"/artifacts/{uploaded['id']}/download")).status_code == 200
    missing = await device.get("/artifacts/no-such-artifact/download")
    assert missing.status_code == 404
    assert set(missing.json()["error"]) >= {"code", "message"}
    forged = await device.http.get(
        f"/api/device/v1/artifacts/{uploaded['id']}/download",
        headers={"Authorization": f"Bearer {device.token}x"},
    )
    assert forged.status_code == 401


def test_artifact_files_are_remembered_for_a_bounded_time() -> None:
    from fleetcast.server.answers import ARTIFACT_FILE_TTL, ArtifactFile

    now = [0.0]
    cache = AnswerCache(size=10, ttl=60, clock=lambda: now[0])
    file = ArtifactFile(blob_key="k", sha256="k", size=1, filename="a-1.fca")
    cache.remember_artifact_file("a", file)
    assert cache.artifact_file("a") == file
    now[0] = ARTIFACT_FILE_TTL + 1
    assert cache.artifact_file("a") is None
    disabled = AnswerCache(size=0, ttl=60)
    disabled.remember_artifact_file("a", file)
    assert disabled.artifact_file("a") is None
