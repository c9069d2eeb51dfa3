"""A deployment phase's offers, read once in bulk: the woken fleet's check-ins run no SQL.

What a user sees: when a deployment starts, the first device to check in
gets its offer from the database and the server reads the whole phase's
offers in one pass; every other device of the phase then gets exactly the
offer the database would give, from memory. A device that may get a delta is
still answered from the database, and a device notified while the bulk read
runs is not remembered from it.
"""

from __future__ import annotations

import asyncio

from fleetcast.core.wire import Inventory
from fleetcast.server.answers import IDLE, AnswerCache, encode_answer
from fleetcast.server.services.deltas import ENGINES_ATTRIBUTE
from tests.factories import BuiltArtifact
from tests.server.harness import Server, SimDevice
from tests.server.test_answers import (
    FakeClock,
    no_route_dependencies,
    statements_of_this_task,
)


async def _remembered_idle(devices: list[SimDevice]) -> str:
    """Every device polls once (now remembered idle); the idle ETag."""
    etag = ""
    for device in devices:
        response = await device.next()
        assert response.json() == {"update": None}
        etag = response.headers["ETag"]
    return etag


async def test_the_first_offer_of_a_phase_primes_every_other_device(
    server: Server, artifact: BuiltArtifact
) -> None:
    devices = await server.fleet(12)
    idle = await _remembered_idle(devices)
    deployment = await server.deploy((await server.upload(artifact))["id"])
    first, *others = devices
    offered = await first.next(etag=idle)
    assert offered.status_code == 200
    assert offered.json()["update"]["deployment_id"] == deployment["id"]
    await server.state.primer.settled()
    assert server.state.primer.primed == len(devices)
    with statements_of_this_task(server) as sql, no_route_dependencies(server):
        answers = [await device.next(etag=idle) for device in others]
    assert sql == []
    for answer in answers:
        assert answer.status_code == 200
        assert answer.content == offered.content  # one offer, the same bytes
        assert answer.headers["ETag"] == offered.headers["ETag"]
    # What memory answers is what the database answers.
    probe = others[0]
    assert probe.device_id is not None
    server.state.answers.invalidate([probe.device_id])
    with statements_of_this_task(server) as sql:
        fresh = await probe.next(etag=idle)
    assert sql, "a forgotten device is answered from the database"
    assert fresh.content == offered.content


async def test_a_remembered_offer_is_not_held_by_a_long_poll(
    server: Server, artifact: BuiltArtifact
) -> None:
    """A long-poll waits for a change; an offer is one already: answered at once from memory."""
    first, second = await server.fleet(2)
    idle = await _remembered_idle([first, second])
    await server.deploy((await server.upload(artifact))["id"])
    offered = await first.next(etag=idle)
    await server.state.primer.settled()
    with no_route_dependencies(server):
        waited = await asyncio.wait_for(second.next(wait=10), timeout=5)
        unchanged = await second.next(etag=offered.headers["ETag"])
    assert waited.status_code == 200 and waited.content == offered.content
    assert unchanged.status_code == 304


async def test_a_status_report_ends_the_remembered_offer(
    server: Server, artifact: BuiltArtifact
) -> None:
    first, second = await server.fleet(2)
    idle = await _remembered_idle([first, second])
    deployment = await server.deploy((await server.upload(artifact))["id"])
    await first.next(etag=idle)
    await server.state.primer.settled()
    assert second.device_id is not None
    assert server.state.answers.get(second.device_id) is not None
    assert (await second.report(deployment["id"], "downloading")).status_code == 204
    assert server.state.answers.get(second.device_id) is None
    with statements_of_this_task(server) as sql:
        again = await second.next()
    assert sql and again.json()["update"]["deployment_id"] == deployment["id"]


async def test_a_device_that_may_get_a_delta_is_asked_from_the_database(
    server: Server, artifact: BuiltArtifact
) -> None:
    """Its offer depends on delta generation, which sends no notification: never remembered."""
    plain, upgrading = await server.fleet(2)
    response = await upgrading.send_inventory(
        Inventory(
            device_type="acme-gw",
            artifact_name="acme-fw",
            artifact_version="1.0.0",
            attributes={ENGINES_ATTRIBUTE: "zstd"},
        )
    )
    assert response.status_code == 204
    idle = await _remembered_idle([plain, upgrading])
    await server.deploy((await server.upload(artifact))["id"])
    assert (await plain.next(etag=idle)).status_code == 200
    await server.state.primer.settled()
    assert upgrading.device_id is not None
    assert server.state.answers.get(upgrading.device_id) is None
    for _ in range(2):
        with statements_of_this_task(server) as sql:
            await upgrading.next(etag=idle)
        assert sql, "a possible delta is decided by the database every time"


def test_a_device_notified_during_a_bulk_read_is_not_remembered_from_it() -> None:
    cache = AnswerCache(size=10, ttl=60, clock=FakeClock())
    offer = encode_answer(None)
    with cache.reading() as reading:
        cache.invalidate(["reported"])
        for device_id in ("quiet", "reported"):
            cache.put_read(reading, device_id, None, offer)
    assert cache.get("quiet") is not None
    assert cache.get("reported") is None
    with cache.reading() as reading:
        cache.invalidate(None)  # notifications may have been lost: nothing from this read
        cache.put_read(reading, "quiet", None, IDLE)
    assert cache.get("quiet") is None


async def test_a_large_notification_starts_the_read_before_any_device_asks(
    server: Server, artifact: BuiltArtifact
) -> None:
    """A phase that starts names all its devices: the read begins, and nobody's check-in
    reads the database, not even the first one's."""
    devices = await server.fleet(6)
    idle = await _remembered_idle(devices)
    server.state.primer.bulk = len(devices)
    await server.deploy((await server.upload(artifact))["id"])
    await server.state.primer.settled()
    assert server.state.primer.primed == len(devices)
    with statements_of_this_task(server) as sql:
        answers = [await device.next(etag=idle) for device in devices]
    assert sql == []
    assert {a.status_code for a in answers} == {200}


async def test_a_device_with_two_deployments_to_choose_from_is_left_to_its_own_poll(
    server: Server, artifact: BuiltArtifact
) -> None:
    """The oldest running deployment goes first: the bulk read of the newer one must not
    answer for a device that the older one still waits for."""
    devices = await server.fleet(3)
    idle = await _remembered_idle(devices)
    server.state.primer.bulk = len(devices)
    uploaded = await server.upload(artifact)
    older = await server.deploy(uploaded["id"], name="older")
    await server.state.primer.settled()
    newer = await server.deploy(uploaded["id"], name="newer")
    await server.state.primer.settled()
    for device in devices:
        assert device.device_id is not None
        assert server.state.answers.get(device.device_id) is None
        with statements_of_this_task(server) as sql:
            offer = (await device.next(etag=idle)).json()["update"]
        assert sql and offer["deployment_id"] == older["id"] != newer["id"]


async def test_a_resumed_phase_is_read_again(server: Server, artifact: BuiltArtifact) -> None:
    """Pausing drops the remembered offers; resuming names the devices again, and their
    offers are read again at once, though the phase was read minutes ago."""
    devices = await server.fleet(4)
    idle = await _remembered_idle(devices)
    server.state.primer.bulk = len(devices)
    deployment = await server.deploy((await server.upload(artifact))["id"])
    await server.state.primer.settled()
    assert server.state.primer.primed == len(devices)
    base = f"/api/v1/deployments/{deployment['id']}"
    assert (await server.admin.post(f"{base}/pause")).is_success
    paused = [(await device.next(etag=idle)).status_code for device in devices]
    assert paused == [304] * len(devices)  # nothing to do while paused
    assert (await server.admin.post(f"{base}/resume")).is_success
    await server.state.primer.settled()
    assert server.state.primer.primed == 2 * len(devices)
    with statements_of_this_task(server) as sql:
        resumed = [await device.next(etag=idle) for device in devices]
    assert sql == []
    assert {r.json()["update"]["deployment_id"] for r in resumed} == {deployment["id"]}
