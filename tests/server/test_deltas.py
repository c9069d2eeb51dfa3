"""Delta updates on the server: queued per needed pair, generated in the background,
offered to exactly the devices they fit, and counted per deployment."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.core.manifest import Payload
from fleetcast.core.wire import Inventory, UpdateOffer
from fleetcast.delta import DeltaLimits, ImageRef, apply_delta
from fleetcast.server import Settings
from fleetcast.server.services.deltas import choose_engine, served_length
from tests.delta.conftest import noise
from tests.factories import BuiltArtifact, make_artifact
from tests.server.harness import Server, SimDevice, eventually

ALL_ENGINES = {"fleetcast_delta_engines": "hdiffpatch,zstd"}


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        engine_interval=0.05,
        max_long_poll=10,
        delta_interval=0.05,
    )


@pytest.fixture
def releases(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> tuple[BuiltArtifact, BuiltArtifact]:
    old = noise(7, 600 * 1024)
    new = bytearray(old)
    new[300_000:301_000] = noise(8, 1000)
    directory = tmp_path / "artifacts"
    return (
        make_artifact(directory, vendor_key, version="1.0.0", image=old),
        make_artifact(directory, vendor_key, version="1.1.0", image=bytes(new)),
    )


async def _inventory(device: SimDevice, version: str, attributes: dict[str, str]) -> None:
    response = await device.send_inventory(Inventory("acme-gw", "acme-fw", version, attributes))
    assert response.status_code == 204, response.text


async def _offer_with_delta(device: SimDevice) -> UpdateOffer:
    async def fetch() -> UpdateOffer | None:
        return await device.offer()

    offer = await eventually(fetch, lambda o: o is not None and o.delta is not None, 20)
    assert offer is not None
    return offer


async def test_delta_is_generated_and_offered_to_exactly_the_devices_it_fits(
    server: Server, releases: tuple[BuiltArtifact, BuiltArtifact]
) -> None:
    """Four devices, one deployment of 1.1.0. The two on 1.0.0 with a delta-capable
    agent get a delta once the server has made it (hdiffpatch, or zstd for the agent
    that has only zstd); the one on a version the server does not hold and the old
    agent get the full artifact at once. The delta rebuilds 1.1.0 from 1.0.0."""
    v1, v2 = releases
    await server.upload(v1)
    target = await server.upload(v2)
    both, zstd_only, unknown_source, old_agent = await server.fleet(4)
    await _inventory(both, "1.0.0", ALL_ENGINES)
    await _inventory(zstd_only, "1.0.0", {"fleetcast_delta_engines": "zstd"})
    await _inventory(unknown_source, "0.9.0", ALL_ENGINES)
    await _inventory(old_agent, "1.0.0", {})
    deployment = await server.deploy(target["id"])

    for device in (unknown_source, old_agent):
        offer = await device.offer()
        assert offer is not None and offer.delta is None

    offer = await _offer_with_delta(both)
    assert offer.delta is not None
    assert offer.delta.engine == "hdiffpatch"
    assert offer.delta.source_version == "1.0.0"
    assert offer.delta.size < v2.signed.manifest.payloads[0].compressed_size // 20
    zstd_offer = await _offer_with_delta(zstd_only)
    assert zstd_offer.delta is not None and zstd_offer.delta.engine == "zstd"

    response = await both.get(offer.delta.url.removeprefix("/api/device/v1"))
    assert response.status_code == 200
    assert len(response.content) == offer.delta.size
    assert _rebuild(v1, v2, response.content) == v2.image

    full = await old_agent.get(
        f"/artifacts/{target['id']}/download", headers={"Range": "bytes=100-"}
    )
    assert full.status_code == 206
    status = await server.deployment(deployment["id"])
    assert status["bytes_shipped"] == offer.delta.size + target["size"] - 100
    assert status["bytes_full"] == 2 * target["size"]


def _rebuild(v1: BuiltArtifact, v2: BuiltArtifact, delta: bytes) -> bytes:
    image = v2.signed.manifest.payloads[0]
    old_path = v1.path.with_suffix(".old")
    old_path.write_bytes(v1.image)
    out = io.BytesIO()
    apply_delta(
        io.BytesIO(delta).read,
        old_path,
        out.write,
        source=ImageRef(len(v1.image), v1.signed.manifest.payloads[0].sha256),
        target=ImageRef(image.size, image.sha256),
        limits=DeltaLimits(),
        max_size=len(delta),
    )
    return out.getvalue()


async def test_a_device_reporting_another_image_hash_gets_the_full_artifact(
    server: Server, releases: tuple[BuiltArtifact, BuiltArtifact]
) -> None:
    v1, v2 = releases
    await server.upload(v1)
    target = await server.upload(v2)
    good, modified = await server.fleet(2)
    await _inventory(good, "1.0.0", ALL_ENGINES)
    await server.deploy(target["id"])
    await _offer_with_delta(good)  # the delta exists now
    await _inventory(modified, "1.0.0", {**ALL_ENGINES, "fleetcast_rootfs_sha256": "0" * 64})
    offer = await modified.offer()
    assert offer is not None and offer.delta is None


async def test_with_deltas_off_nobody_waits_and_nothing_is_generated(
    tmp_path: Path,
    settings: Settings,
    server: Server,
    releases: tuple[BuiltArtifact, BuiltArtifact],
) -> None:
    server.settings.delta_engine = "off"
    v1, v2 = releases
    await server.upload(v1)
    target = await server.upload(v2)
    (device,) = await server.fleet(1)
    await _inventory(device, "1.0.0", ALL_ENGINES)
    await server.deploy(target["id"])
    offer = await device.offer()
    assert offer is not None and offer.delta is None


async def test_a_delta_not_smaller_than_the_image_is_never_offered(
    server: Server, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """Unrelated images: the delta would cost as much as the artifact, so the
    generation is recorded as failed and the device is sent the full artifact."""
    directory = tmp_path / "unrelated"
    await server.upload(make_artifact(directory, vendor_key, version="1.0.0", image=noise(1, 4096)))
    target = await server.upload(
        make_artifact(directory, vendor_key, version="1.1.0", image=noise(2, 4096))
    )
    (device,) = await server.fleet(1)
    await _inventory(device, "1.0.0", ALL_ENGINES)
    await server.deploy(target["id"])

    async def fetch() -> UpdateOffer | None:
        return await device.offer()

    offer = await eventually(fetch, lambda o: o is not None, 20)
    assert offer is not None and offer.delta is None


def test_engine_policy() -> None:
    def image(size: int, **meta: str) -> Payload:
        return Payload("rootfs", "rootfs-image", size, "a" * 64, 10, "b" * 64, dict(meta))

    auto = Settings(delta_small_image=1000)
    assert choose_engine(auto, image(1000)) == "hdiffpatch"
    assert choose_engine(auto, image(1001)) == "zstd"
    assert choose_engine(auto, image(10, **{"delta-engine": "zstd"})) == "zstd"
    assert choose_engine(auto, image(10, **{"delta-engine": "off"})) is None
    assert choose_engine(Settings(delta_engine="off"), image(10)) is None
    assert choose_engine(Settings(delta_engine="zstd"), image(10)) == "zstd"


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, 1000), ("bytes=100-", 900), ("bytes=0-99", 100), ("bytes=-10", 10), ("junk", 1000)],
)
def test_served_length(header: Any, expected: int) -> None:
    assert served_length(header, 1000) == expected


async def test_devices_asking_at_the_same_moment_queue_one_delta(
    server: Server, releases: tuple[BuiltArtifact, BuiltArtifact]
) -> None:
    """Six devices poll at once right after the deployment starts: each /next may
    queue the same delta; one row wins, nobody gets an error, all get the delta."""
    v1, v2 = releases
    await server.upload(v1)
    target = await server.upload(v2)
    devices = await server.fleet(6)
    for device in devices:
        await _inventory(device, "1.0.0", ALL_ENGINES)
    await server.deploy(target["id"])
    responses = await asyncio.gather(*(device.next() for device in devices))
    assert [r.status_code for r in responses] == [200] * 6
    offers = [await _offer_with_delta(device) for device in devices]
    assert len({o.delta.url for o in offers if o.delta is not None}) == 1


async def test_a_device_waiting_for_its_delta_is_woken_when_it_is_ready(
    server: Server, releases: tuple[BuiltArtifact, BuiltArtifact]
) -> None:
    """Its offer was withheld while the delta was made: it need not wait for its next
    poll, the generation's end is a notification (MQTT push included)."""
    v1, v2 = releases
    await server.upload(v1)
    target = await server.upload(v2)
    (device,) = await server.fleet(1)
    await _inventory(device, "1.0.0", ALL_ENGINES)
    withheld = await device.next()
    assert withheld.json() == {"update": None}
    await server.deploy(target["id"])
    # The long-poll outlasts the test's patience: only a notification ends it early.
    poll = asyncio.create_task(device.next(wait=10, etag=withheld.headers["ETag"]))
    response = await asyncio.wait_for(poll, timeout=9)
    update = response.json()["update"]
    assert update is not None and update["delta"] is not None
