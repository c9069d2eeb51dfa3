"""The virtual fleet: many devices in one asyncio process against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetcast.cli._api import ManagementClient
from fleetcast.exceptions import UsageError
from fleetcast.server import Settings
from fleetcast.sim import ServerThread
from fleetcast.sim.virtual import FleetMix, FleetStats, VirtualFleet, device_key
from tests.factories import BuiltArtifact
from tests.services import mqtt_broker


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    settings = Settings(data_dir=tmp_path / "server", engine_interval=0.1, max_long_poll=5)
    with ServerThread(settings) as running:
        yield running


def test_keys_are_deterministic_and_mixes_are_checked() -> None:
    assert device_key("s", "a").private_bytes_raw() == device_key("s", "a").private_bytes_raw()
    assert device_key("s", "a").private_bytes_raw() != device_key("s", "b").private_bytes_raw()
    with pytest.raises(UsageError):
        FleetMix(unhealthy=1.5)
    with pytest.raises(UsageError, match="MQTT"):
        VirtualFleet("http://x", count=1, mix=FleetMix(push=1.0))


def test_a_fleet_can_be_split_into_slices_with_the_same_devices() -> None:
    """Several load-generator processes each run a slice: together, the same fleet."""
    whole = VirtualFleet("http://x", count=5)
    slices = [VirtualFleet("http://x", count=3), VirtualFleet("http://x", count=2, first=4)]
    assert [d.serial for d in whole.devices] == [d.serial for f in slices for d in f.devices]
    assert [d.key.private_bytes_raw() for d in whole.devices] == [
        d.key.private_bytes_raw() for f in slices for d in f.devices
    ]
    assert slices[1].devices[0].serial == "vdev-0000004"


def test_a_mixed_virtual_fleet_goes_through_a_phased_rollout(
    server: ServerThread, artifact_v2: BuiltArtifact, tmp_path: Path
) -> None:
    """Thirty devices enrol, long-poll, and get 1.1.0 in two phases: the unhealthy
    ones report a rolled-back failure, the flaky ones resume their download after
    going offline, and the server ends with the same counts the fleet saw."""
    assert server.admin_token is not None
    with ManagementClient(server.url, server.admin_token) as admin:
        artifact = admin.upload_artifact(artifact_v2.path)
        enrollment = admin.post("/enrollment-tokens", {"expires_in": 3600})["token"]
        fleet = VirtualFleet(
            server.url,
            count=30,
            mix=FleetMix(unhealthy=0.2, offline=0.3, slow=0.2),
            enrollment_token=enrollment,
            long_poll=5,
            poll_interval=0.2,
            offline_seconds=0.5,
            slow_seconds=0.5,
            connections=64,
        )
        unhealthy = sum(d.unhealthy for d in fleet.devices)
        assert 0 < unhealthy < 30
        assert any(d.offline for d in fleet.devices)

        async def scenario() -> FleetStats:
            runner = asyncio.create_task(
                fleet.run(duration=90, until=lambda s: s.successes + s.failures >= 30)
            )
            while len(admin.get("/devices", status="accepted", limit=100)["items"]) < 30:
                await asyncio.sleep(0.1)
            admin.post(
                "/deployments",
                {
                    "name": "virtual",
                    "artifact_id": artifact["id"],
                    "target": {"device_types": ["acme-gw"]},
                    "phases": [{"percent": 30, "soak_seconds": 0}, {"percent": 100}],
                },
            )
            return await runner

        stats = asyncio.run(scenario())
        assert stats.successes == 30 - unhealthy
        assert stats.failures == unhealthy
        assert stats.bytes_downloaded >= 30 * artifact["size"]
        (listed,) = admin.get("/deployments")["items"]
        deployment = admin.get(f"/deployments/{listed['id']}")
        assert deployment["status"] == "completed"
        assert deployment["counts"].get("failure", 0) == unhealthy


def test_push_devices_check_in_when_notified(
    server: ServerThread, artifact_v2: BuiltArtifact, tmp_path: Path
) -> None:
    """Devices that poll once a minute still get the update at once through MQTT."""
    with mqtt_broker(tmp_path) as (host, port):
        settings = Settings(
            data_dir=tmp_path / "push-server",
            engine_interval=0.1,
            mqtt_url=f"mqtt://{host}:{port}",
            mqtt_topic_prefix=f"sim-{tmp_path.name}",
        )
        with ServerThread(settings) as pushing:
            assert pushing.admin_token is not None
            with ManagementClient(pushing.url, pushing.admin_token) as admin:
                artifact = admin.upload_artifact(artifact_v2.path)
                enrollment = admin.post("/enrollment-tokens", {"expires_in": 3600})["token"]
                fleet = VirtualFleet(
                    pushing.url,
                    count=10,
                    mix=FleetMix(push=1.0),
                    enrollment_token=enrollment,
                    poll_interval=60,
                    mqtt_url=f"mqtt://{host}:{port}",
                    mqtt_topic_prefix=f"sim-{tmp_path.name}",
                )

                async def scenario() -> FleetStats:
                    runner = asyncio.create_task(
                        fleet.run(duration=45, until=lambda s: s.successes >= 10)
                    )
                    while fleet.stats.checkins < 10:
                        await asyncio.sleep(0.1)
                    await asyncio.sleep(1.0)  # the listener is subscribed
                    admin.post(
                        "/deployments",
                        {
                            "name": "push",
                            "artifact_id": artifact["id"],
                            "target": {"device_types": ["acme-gw"]},
                        },
                    )
                    return await runner

                stats = asyncio.run(scenario())
                assert stats.successes == 10
                assert stats.push_notices >= 10
