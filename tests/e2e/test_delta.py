"""Delta updates end to end: a real server generates the delta, real agents apply it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.cli._api import ManagementClient
from fleetcast.delta._format import MARKER
from fleetcast.server import Settings
from fleetcast.sim import ServerThread, SimulatedFleet
from tests.agent.conftest import noisy_image
from tests.e2e.conftest import accept_all, wait_deployment, wait_inventory, wait_until
from tests.factories import make_artifact
from tests.pg import temporary_database

pytestmark = pytest.mark.e2e

SIZE = 3 * 1024 * 1024


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    data_dir = tmp_path / "server"
    fast = {"engine_interval": 0.2, "delta_interval": 0.2}
    if request.param == "sqlite":
        yield Settings(data_dir=data_dir, **fast)
        return
    with temporary_database() as url:
        yield Settings(data_dir=data_dir, database_url=url, **fast)


def _deploy(admin: ManagementClient, artifact_id: str, device_id: str) -> dict[str, object]:
    deployment: dict[str, object] = admin.post(
        "/deployments",
        {
            "name": f"to {device_id}",
            "artifact_id": artifact_id,
            "target": {"device_ids": [device_id]},
        },
    )
    final = wait_deployment(admin, str(deployment["id"]))
    assert final["status"] == "completed"
    return final


def _delta_blobs(settings: Settings) -> list[Path]:
    return [
        p
        for p in settings.resolved_blob_dir.glob("??/*")
        if p.is_file() and p.read_bytes()[: len(MARKER)] == MARKER
    ]


def test_delta_update_and_fallback_on_a_corrupt_delta(
    tmp_path: Path,
    settings: Settings,
    server: ServerThread,
    admin: ManagementClient,
    vendor_pub: Path,
    vendor_key: Ed25519PrivateKey,
) -> None:
    """Two devices run 1.0.0; 1.1.0 changes 40 KiB of a 3 MiB image. The first
    device's deployment makes the server generate a delta: the device rebuilds 1.1.0
    from its running slot and the delta, commits, and the deployment shows a small
    fraction of the full image shipped. Then the stored delta is damaged on the
    server's disk: the second device's rebuilt image does not match the signed
    manifest, so it downloads the full artifact and commits all the same."""
    old = noisy_image("1.0.0", SIZE)
    new = bytearray(old)
    new[1_000_000:1_040_000] = noisy_image("1.1.0", 40_000)
    directory = tmp_path / "artifacts"
    admin.upload_artifact(make_artifact(directory, vendor_key, version="1.0.0", image=old).path)
    v2 = make_artifact(directory, vendor_key, version="1.1.0", image=bytes(new))
    artifact = admin.upload_artifact(v2.path)

    fleet = SimulatedFleet(tmp_path / "devices", server.url, [vendor_pub])
    fleet.add(
        2,
        device_type="acme-gw",
        image=old,
        artifact_name="acme-fw",
        artifact_version="1.0.0",
        long_poll=5,
        poll_interval=0.5,
    )
    fleet.start()
    try:
        accept_all(admin, 2)
        devices = wait_inventory(admin, 2, "1.0.0")
        first, second = sorted(devices)
        wait_until(
            "delta engines in the inventory",
            lambda: all(
                "fleetcast_delta_engines" in d["attributes"]
                for d in admin.get("/devices", status="accepted")["items"]
            ),
        )
        by_delta = _deploy(admin, artifact["id"], first)
        (blob,) = _delta_blobs(settings)
        data = bytearray(blob.read_bytes())
        data[-100] ^= 0xFF
        blob.write_bytes(bytes(data))
        by_fallback = _deploy(admin, artifact["id"], second)
    finally:
        fleet.stop()
    assert fleet.errors == {}

    assert by_delta["bytes_full"] == artifact["size"]
    assert 0 < by_delta["bytes_shipped"] < artifact["size"] // 10  # type: ignore[operator]
    # The damaged delta, then the whole artifact.
    assert by_fallback["bytes_shipped"] == len(data) + artifact["size"]
    for device in fleet.devices:
        assert device.installed() == ("acme-fw", "1.1.0")
        assert device.slot_bytes("b")[: len(new)] == bytes(new)
    history = admin.get(f"/devices/{second}/history")["items"]
    assert [e["state"] for e in history if e.get("deployment_id")][-1] == "success"
