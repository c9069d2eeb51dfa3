"""Encrypted payloads end to end: a real server and real agents over HTTP (ADR 0008)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fleetcast.agent import SimulatedDevice
from fleetcast.agent.atomicfile import write_atomic
from fleetcast.artifact import Encryption
from fleetcast.cli._api import ManagementClient
from fleetcast.cli.encryption import upload_content_key
from fleetcast.core.envelope import x25519_private_to_pem
from fleetcast.server import Settings
from fleetcast.sim import ServerThread, SimulatedFleet
from tests.e2e.conftest import accept_all, wait_deployment, wait_inventory, wait_until
from tests.encrypted import MARKER, make_encrypted_artifact, secret_image

pytestmark = pytest.mark.e2e

SIZE = 1536 * 1024


def _deploy(admin: ManagementClient, artifact_id: str, device_id: str) -> str:
    deployment: dict[str, Any] = admin.post(
        "/deployments",
        {
            "name": f"to {device_id}",
            "artifact_id": artifact_id,
            "target": {"device_ids": [device_id]},
        },
    )
    return str(deployment["id"])


def _give_group_key(device: SimulatedDevice, key_file: Path) -> None:
    """What an integrator bakes into a group's devices: decryption_keys in agent.toml."""
    config = replace(device.config, decryption_keys=(key_file,))
    write_atomic(device.config_path, config.to_toml().encode())


def _failure_message(admin: ManagementClient, device_id: str) -> str | None:
    events = admin.get(f"/devices/{device_id}/history")["items"]
    failed = [e for e in events if e.get("state") == "failure"]
    return str(failed[0]["message"]) if failed else None


def test_encrypted_updates_per_device_and_per_group(
    tmp_path: Path,
    settings: Settings,
    server: ServerThread,
    admin: ManagementClient,
    vendor_pub: Path,
    vendor_key: Ed25519PrivateKey,
) -> None:
    """Three devices run 1.0.0. The vendor builds confidential 1.1.0 encrypted per
    device (the operator uploads it with its content key) and 1.2.0 encrypted for the
    "lab" device group. Device 1 gets 1.1.0 with the key wrapped for it in its offer;
    device 2 holds the lab group key and gets 1.2.0; device 3 is not in the group, is
    offered 1.2.0 too and reports that it has no key, staying on 1.0.0. Afterwards a
    copy of the server's blob directory alone does not contain the firmware's
    plaintext marker anywhere (the images on the devices do)."""
    group = X25519PrivateKey.generate()
    group_key = tmp_path / "lab-group.key"
    group_key.write_bytes(x25519_private_to_pem(group))
    group_key.chmod(0o600)

    directory = tmp_path / "artifacts"
    per_device = Encryption()
    v11 = make_encrypted_artifact(
        directory, vendor_key, per_device, version="1.1.0", image=secret_image("1.1.0", SIZE)
    )
    v12 = make_encrypted_artifact(
        directory,
        vendor_key,
        Encryption(recipients=(group.public_key(),)),
        version="1.2.0",
        image=secret_image("1.2.0", SIZE),
    )
    a11 = admin.upload_artifact(v11.path)
    upload_content_key(admin, a11["id"], per_device.content_key)
    a12 = admin.upload_artifact(v12.path)

    fleet = SimulatedFleet(tmp_path / "devices", server.url, [vendor_pub])
    first, second, third = fleet.add(
        3,
        device_type="acme-gw",
        image=secret_image("1.0.0", 64 * 1024),
        artifact_name="acme-fw",
        artifact_version="1.0.0",
        long_poll=5,
        poll_interval=0.5,
    )
    _give_group_key(second, group_key)
    fleet.start()
    try:
        accept_all(admin, 3)
        wait_inventory(admin, 3, "1.0.0")
        devices = wait_until(
            "every device's X25519 key in the inventory",
            lambda: (
                items
                if len(items := admin.get("/devices", status="accepted")["items"]) == 3
                and all("fleetcast.x25519" in d["attributes"] for d in items)
                else None
            ),
        )
        by_serial = {d["identity"]["serial"]: d["id"] for d in devices}
        ids = [by_serial[fleet.serial_of(d)] for d in (first, second, third)]

        done = [
            wait_deployment(admin, _deploy(admin, a11["id"], ids[0])),
            wait_deployment(admin, _deploy(admin, a12["id"], ids[1])),
        ]
        _deploy(admin, a12["id"], ids[2])
        message = wait_until("device 3's failure report", lambda: _failure_message(admin, ids[2]))
    finally:
        fleet.stop()
    assert fleet.errors == {}

    assert [d["status"] for d in done] == ["completed", "completed"]
    assert first.installed() == ("acme-fw", "1.1.0")
    assert first.slot_bytes("b")[:SIZE] == v11.image
    assert second.installed() == ("acme-fw", "1.2.0")
    assert second.slot_bytes("b")[:SIZE] == v12.image
    assert "no key to decrypt payload rootfs" in message
    assert third.booted_slot() == "a" and third.installed() == ("acme-fw", "1.0.0")
    assert not third.bootloader.in_trial()

    # What an attacker who copies the blob store gets: nothing readable.
    stolen = tmp_path / "stolen-blobs"
    shutil.copytree(settings.resolved_blob_dir, stolen)
    blobs = [p for p in stolen.rglob("*") if p.is_file()]
    assert len(blobs) >= 2
    assert all(MARKER not in p.read_bytes() for p in blobs)
    assert per_device.content_key not in b"".join(p.read_bytes() for p in blobs)
    assert MARKER in first.slot_bytes("b")  # the marker is real: the device decrypted it
