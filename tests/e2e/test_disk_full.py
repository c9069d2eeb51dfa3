"""A full disk fails cleanly, on the server and on the device.

The server's data directory (SQLite database and blobs) and a device's
inactive slot each live on a small tmpfs mounted for the test:

- an artifact upload that does not fit is refused with 507
  ``insufficient_storage`` in the one error shape, nothing half-written
  stays behind, and the server keeps working (a smaller upload succeeds);
- a device whose inactive slot cannot hold the new image reports a failure
  with the reason, keeps running its committed slot, and installs nothing.

Mounting needs root (CI runs as root); elsewhere the tests are skipped with
the reason, unless ``FLEETCAST_REQUIRE_SERVICES=1`` makes that a failure.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice
from fleetcast.agent.config import AgentLimits
from fleetcast.agent.runner import run_agent
from fleetcast.cli._api import ManagementClient
from fleetcast.core.signing import public_key_to_pem
from fleetcast.server import Settings
from fleetcast.sim import ServerThread
from tests.e2e.conftest import wait_deployment, wait_until
from tests.factories import make_artifact, make_image

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``"4m"``) mounted at ``path`` for the block."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}"
        if os.environ.get("FLEETCAST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}; FLEETCAST_REQUIRE_SERVICES=1 requires it")
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_an_upload_that_does_not_fit_is_refused_with_507_and_leaves_nothing(
    tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """The data directory is a 3 MiB file system. A 4 MiB artifact is refused with 507
    insufficient_storage; no temp file or blob is left; a small artifact then uploads."""
    big = make_artifact(tmp_path / "big", vendor_key, version="2.0.0", image=os.urandom(4 << 20))
    small = make_artifact(tmp_path / "small", vendor_key, version="1.1.0")
    with tiny_filesystem(tmp_path / "data", "3m") as data_dir:
        settings = Settings(data_dir=data_dir, engine_interval=0.2)
        with ServerThread(settings) as server:
            assert server.admin_token is not None
            headers = {
                "Authorization": f"Bearer {server.admin_token}",
                "Content-Type": "application/octet-stream",
            }
            before = _files(data_dir / "blobs")
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
                response = http.post("/api/v1/artifacts", content=big.path.read_bytes())
                assert response.status_code == 507, response.text
                error = response.json()["error"]
                assert error["code"] == "insufficient_storage"
                assert set(error) == {"code", "message", "details"}
                assert _files(data_dir / "blobs") == before, "a partial upload was left behind"
                assert http.get("/api/v1/artifacts").json()["items"] == []
                ok = http.post("/api/v1/artifacts", content=small.path.read_bytes())
                assert ok.status_code == 201, ok.text
                assert [a["version"] for a in http.get("/api/v1/artifacts").json()["items"]] == [
                    "1.1.0"
                ]


def test_a_device_whose_slot_is_full_reports_a_failure_and_keeps_its_slot(
    tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """The inactive slot is a 1 MiB partition; the new image is 2 MiB. The device writes
    until the partition is full, reports the failure with the reason, and still boots
    1.0.0 from its committed slot; the deployment completes with that one failure."""
    v1 = make_image("1.0.0")
    v2 = make_artifact(
        tmp_path / "artifacts", vendor_key, version="1.1.0", image=make_image("1.1.0", 2 << 20)
    )
    pub = tmp_path / "vendor.pub"
    pub.write_text(public_key_to_pem(vendor_key.public_key()))
    with (
        ServerThread(Settings(data_dir=tmp_path / "server", engine_interval=0.2)) as server,
        tiny_filesystem(tmp_path / "partition-b", "1m") as partition,
    ):
        assert server.admin_token is not None
        admin = ManagementClient(server.url, server.admin_token)
        enrollment = admin.post("/enrollment-tokens", {"expires_in": 3600})["token"]
        device = SimulatedDevice.create(
            tmp_path / "device",
            server_url=server.url,
            device_type="acme-gw",
            identity={"serial": "FULL-1"},
            image=v1,
            artifact_name="acme-fw",
            artifact_version="1.0.0",
            trusted_keys=[pub],
            long_poll=1,
            poll_interval=0.2,
            enrollment_token=enrollment,
            limits=AgentLimits(backoff_base=0.05, backoff_cap=0.5),
        )
        # Slot B lives on its own (small) partition, like on a real board.
        slot_b = tmp_path / "device" / "slot-b.img"
        slot_b.unlink()
        (partition / "slot-b.img").write_bytes(b"")
        slot_b.symlink_to(partition / "slot-b.img")
        stop = threading.Event()
        agent = threading.Thread(target=run_agent, args=(device.config, stop), daemon=True)
        agent.start()
        try:
            (member,) = wait_until(
                "the device on 1.0.0",
                lambda: [
                    d
                    for d in admin.get("/devices", q="FULL-1")["items"]
                    if d["artifact_version"] == "1.0.0"
                ],
            )
            artifact = admin.upload_artifact(v2.path)
            deployment = admin.post(
                "/deployments",
                {
                    "name": "too big",
                    "artifact_id": artifact["id"],
                    "target": {"device_ids": [member["id"]]},
                },
            )
            final = wait_deployment(admin, deployment["id"])
            (state,) = admin.get(f"/deployments/{deployment['id']}/devices")["items"]
        finally:
            stop.set()
            agent.join(timeout=30)
    assert final["status"] == "completed"
    assert state["state"] == "failure"
    assert "No space left on device" in state["last_message"]
    assert state["log_tail"]
    assert state["rolled_back"] is False
    assert device.booted_slot() == "a"
    assert device.installed() == ("acme-fw", "1.0.0")
    assert device.slot_bytes("a") == v1
    assert not device.bootloader.in_trial()
