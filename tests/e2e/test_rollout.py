"""Phased rollouts with real agents over HTTP, the way an operator lives them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fleetcast.cli._api import ManagementClient
from fleetcast.sim import ServerThread, SimulatedFleet
from tests.e2e.conftest import (
    accept_all,
    wait_deployment,
    wait_inventory,
    wait_until,
)
from tests.factories import BuiltArtifact

pytestmark = pytest.mark.e2e


def _fleet(
    tmp_path: Path, server: ServerThread, vendor_pub: Path, image: bytes, count: int
) -> SimulatedFleet:
    fleet = SimulatedFleet(tmp_path / "devices", server.url, [vendor_pub])
    fleet.add(
        count,
        device_type="acme-gw",
        image=image,
        artifact_name="acme-fw",
        artifact_version="1.0.0",
        long_poll=5,
        poll_interval=0.5,
    )
    return fleet


def test_phased_rollout_with_a_failing_canary(
    tmp_path: Path,
    server: ServerThread,
    admin: ManagementClient,
    vendor_pub: Path,
    release: Callable[[str], BuiltArtifact],
) -> None:
    """Six devices on 1.0.0 get 1.1.0 in two phases. One canary's health check fails
    after the reboot: it rolls back by itself to 1.0.0 and reports it with its log; the
    canary phase tolerates one failure, so the rollout goes on and the five others
    end up running 1.1.0 from their other slot."""
    v1, v2 = release("1.0.0"), release("1.1.0")
    admin.upload_artifact(v1.path)
    artifact = admin.upload_artifact(v2.path)
    fleet = _fleet(tmp_path, server, vendor_pub, v1.image, 6)
    fleet.start()
    try:
        accept_all(admin, 6)
        before = wait_inventory(admin, 6, "1.0.0")
        deployment = admin.post(
            "/deployments",
            {
                "name": "acme-fw 1.1.0",
                "artifact_id": artifact["id"],
                "target": {"device_types": ["acme-gw"]},
                "phases": [
                    {"count": 2, "soak_seconds": 1, "max_failure_percent": 50},
                    {"percent": 100, "soak_seconds": 0, "max_failure_percent": 0},
                ],
            },
        )
        members = admin.get(f"/deployments/{deployment['id']}/devices")["items"]
        canaries = sorted(m["device_id"] for m in members if m["phase"] == 0)
        assert len(canaries) == 2
        faulty_id = canaries[0]
        faulty_serial = before[faulty_id]["identity"]["serial"]
        (fleet.root / faulty_serial / "faulty").touch()

        final = wait_deployment(admin, deployment["id"])
        assert final["status"] == "completed"
    finally:
        fleet.stop()
    assert fleet.errors == {}

    outcome = {
        m["device_id"]: m for m in admin.get(f"/deployments/{deployment['id']}/devices")["items"]
    }
    assert outcome[faulty_id]["state"] == "failure"
    assert outcome[faulty_id]["rolled_back"] is True
    assert sum(m["state"] == "success" for m in outcome.values()) == 5

    devices = {d["id"]: d for d in admin.get("/devices")["items"]}
    assert devices[faulty_id]["artifact_version"] == "1.0.0"
    for device in fleet.devices:
        serial = device.root.name
        device_id = next(i for i, d in before.items() if d["identity"]["serial"] == serial)
        _name, version = device.installed()
        if device_id == faulty_id:
            assert version == "1.0.0"
            assert device.booted_slot() == "a"
        else:
            assert version == "1.1.0"
            assert devices[device_id]["artifact_version"] == "1.1.0"
            assert device.booted_slot() == "b"
            assert device.slot_bytes("b")[: len(v2.image)] == v2.image

    history = admin.get(f"/devices/{faulty_id}/history")["items"]
    failures = [e for e in history if e.get("state") == "failure"]
    assert len(failures) == 1
    assert failures[0]["log_tail"], "the failed device's log tail reaches the operator"


def test_server_restart_mid_rollout_loses_nothing(
    tmp_path: Path,
    server: ServerThread,
    admin: ManagementClient,
    vendor_pub: Path,
    release: Callable[[str], BuiltArtifact],
) -> None:
    """The server is stopped after the first phase and started again on the same data:
    the devices keep retrying, the rollout continues where it was, and every device
    ends with exactly one success in its history."""
    v1, v2 = release("1.0.0"), release("1.1.0")
    artifact = admin.upload_artifact(v2.path)
    fleet = _fleet(tmp_path, server, vendor_pub, v1.image, 4)
    fleet.start()
    restarted: ServerThread | None = None
    try:
        accept_all(admin, 4)
        wait_inventory(admin, 4, "1.0.0")
        deployment = admin.post(
            "/deployments",
            {
                "name": "restart",
                "artifact_id": artifact["id"],
                "target": {"device_types": ["acme-gw"]},
                "phases": [{"count": 1, "soak_seconds": 3}, {"percent": 100}],
            },
        )
        dep_id = deployment["id"]

        def first_phase_done() -> bool:
            d = admin.get(f"/deployments/{dep_id}")
            return bool(d["phases"][0]["counts"].get("success", 0) == 1)

        wait_until("the first phase to succeed", first_phase_done)
        server.stop()
        restarted = ServerThread(server.settings, port=server.port).start()
        assert restarted.admin_token is None, "the restarted server keeps its admin token"
        final = wait_deployment(admin, dep_id)
        assert final["status"] == "completed"
        members = admin.get(f"/deployments/{dep_id}/devices")["items"]
        outcome = {m["device_id"]: m["state"] for m in members}
        assert set(outcome.values()) == {"success"}, outcome
        for device_id in outcome:
            history = admin.get(f"/devices/{device_id}/history")["items"]
            assert sum(e.get("state") == "success" for e in history) == 1
    finally:
        fleet.stop()
        if restarted is not None:
            restarted.stop()
