"""The rollout engine driving real deployments: soak, advance, pause on failures, reports."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.core.wire import Inventory
from fleetcast.server.rollout.engine import tick
from tests.factories import BuiltArtifact, make_artifact
from tests.server.harness import Server, SimDevice


async def _phase_of(
    server: Server, deployment_id: str, fleet: list[SimDevice]
) -> dict[int, list[SimDevice]]:
    members = (await server.admin.get(f"/api/v1/deployments/{deployment_id}/devices")).json()
    phase = {m["device_id"]: m["phase"] for m in members["items"]}
    grouped: dict[int, list[SimDevice]] = {}
    for device in fleet:
        grouped.setdefault(phase[device.device_id], []).append(device)
    return grouped


async def test_phase_advances_after_success_and_soak(
    server: Server, artifact: BuiltArtifact
) -> None:
    """The canary succeeds; after its 1 s soak the rest of the fleet is offered the update."""
    fleet = await server.fleet(4)
    uploaded = await server.upload(artifact)
    deployment = await server.deploy(
        uploaded["id"], phases=[{"count": 1, "soak_seconds": 1}, {"percent": 100}]
    )
    dep = deployment["id"]
    phases = await _phase_of(server, dep, fleet)
    [canary] = phases[0]
    assert all([await d.offer() is None for d in phases[1]])

    await canary.install(dep)
    soaking = await server.wait_for_deployment(dep, lambda d: d["phase_completed_at"] is not None)
    assert soaking["current_phase"] == 0 and soaking["status"] == "running"

    advanced = await server.wait_for_deployment(dep, lambda d: d["current_phase"] == 1)
    # The server's own clock, not the test's: the next phase starts only after the soak.
    completed = dt.datetime.fromisoformat(soaking["phase_completed_at"])
    started = dt.datetime.fromisoformat(advanced["phase_started_at"])
    assert started - completed >= dt.timedelta(seconds=1)
    assert advanced["phases"][1]["counts"] == {"scheduled": 3}
    for device in phases[1]:
        offer = await device.offer()
        assert offer is not None and offer.deployment_id == dep
        await device.install(dep)
    done = await server.wait_for_deployment(dep, lambda d: d["status"] == "completed")
    assert done["counts"] == {"success": 4} and done["finished_at"] is not None
    assert all([await d.offer() is None for d in fleet])


async def test_failure_rate_pauses_and_resume_acknowledges(
    server: Server, artifact: BuiltArtifact
) -> None:
    """Half the canaries fail with at most 40% allowed: paused with a reason, nothing advances."""
    fleet = await server.fleet(8)
    uploaded = await server.upload(artifact)
    deployment = await server.deploy(
        uploaded["id"],
        phases=[{"percent": 25, "max_failure_percent": 40}, {"percent": 100}],
    )
    dep = deployment["id"]
    phases = await _phase_of(server, dep, fleet)
    bad, good = phases[0]
    await bad.install(dep, final="failure", message="boot failed", rolled_back=True)

    paused = await server.wait_for_deployment(dep, lambda d: d["status"] == "paused")
    assert paused["pause_reason"] == (
        "phase 1: 1 of 2 devices failed (50%), more than the allowed 40%"
    )
    assert await good.offer() is None
    await good.install(dep)  # already downloading devices may finish; the phase is now done
    await asyncio.sleep(0.2)
    assert (await server.deployment(dep))["current_phase"] == 0  # no advance while paused

    await server.admin.post(f"/api/v1/deployments/{dep}/resume")
    advanced = await server.wait_for_deployment(dep, lambda d: d["current_phase"] == 1)
    assert advanced["status"] == "running"
    assert advanced["phases"][0]["counts"] == {"failure": 1, "success": 1}


async def test_by_default_failures_do_not_pause(server: Server, artifact: BuiltArtifact) -> None:
    fleet = await server.fleet(2)
    uploaded = await server.upload(artifact)
    dep = (await server.deploy(uploaded["id"]))["id"]
    await fleet[0].install(dep, final="failure")
    await fleet[1].install(dep)
    done = await server.wait_for_deployment(dep, lambda d: d["status"] == "completed")
    assert done["counts"] == {"failure": 1, "success": 1}


async def test_status_reports_are_idempotent_and_final(
    server: Server, artifact: BuiltArtifact
) -> None:
    """A repeated report changes nothing; a final state cannot be overwritten."""
    [device] = await server.fleet(1)
    uploaded = await server.upload(artifact)
    dep = (await server.deploy(uploaded["id"], phases=[{"percent": 100, "soak_seconds": 0}]))["id"]
    for _ in range(2):
        assert (await device.report(dep, "downloading", progress=10)).status_code == 204
    assert (await device.report(dep, "downloading", progress=80)).status_code == 204
    assert (await device.report(dep, "success", message="ok")).status_code == 204
    assert (await device.report(dep, "success", message="ok")).status_code == 204
    conflict = await device.report(dep, "failure")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "status_conflict"
    back = await device.report(dep, "downloading")
    assert back.status_code == 409

    history = (await server.admin.get(f"/api/v1/devices/{device.device_id}/history")).json()
    states = [(e["kind"], e["state"]) for e in history["items"]]
    assert states == [
        ("admission", "pending"),
        ("admission", "accepted"),
        ("status", "downloading"),
        ("status", "success"),
    ]
    assert history["items"][-1]["artifact_version"] == "1.1.0"
    assert history["items"][-1]["deployment_id"] == dep
    shown = (await server.admin.get(f"/api/v1/devices/{device.device_id}")).json()
    assert (shown["artifact_name"], shown["artifact_version"]) == ("acme-fw", "1.1.0")


async def test_failure_report_keeps_a_bounded_log_tail(
    server: Server, artifact: BuiltArtifact
) -> None:
    [device] = await server.fleet(1)
    uploaded = await server.upload(artifact)
    dep = (await server.deploy(uploaded["id"]))["id"]
    lines = [f"line {i}" for i in range(150)]
    await device.install(
        dep, final="failure", message="fsck failed", log_tail=tuple(lines), rolled_back=True
    )
    members = (await server.admin.get(f"/api/v1/deployments/{dep}/devices")).json()["items"]
    [member] = members
    assert member["state"] == "failure" and member["rolled_back"] is True
    assert member["last_message"] == "fsck failed"
    assert member["log_tail"] == lines[-100:]
    history = (await server.admin.get(f"/api/v1/devices/{device.device_id}/history")).json()
    assert history["items"][-1]["log_tail"] == lines[-100:]
    assert history["items"][-1]["rolled_back"] is True


async def test_already_installed_counts_as_success(server: Server, artifact: BuiltArtifact) -> None:
    """A device already running the artifact gets the offer and answers already-installed."""
    [device] = await server.fleet(1)
    await device.send_inventory(Inventory("acme-gw", "acme-fw", "1.1.0"))
    uploaded = await server.upload(artifact)
    dep = (await server.deploy(uploaded["id"]))["id"]
    offer = await device.offer()
    assert offer is not None and offer.manifest.manifest.version == "1.1.0"
    assert (await device.report(dep, "already-installed")).status_code == 204
    done = await server.wait_for_deployment(dep, lambda d: d["status"] == "completed")
    assert done["counts"] == {"already-installed": 1}


async def test_one_active_deployment_per_device(
    server: Server, artifact: BuiltArtifact, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """Two deployments for one device: the older first, the newer once the first is done."""
    [device] = await server.fleet(1)
    newer_artifact = make_artifact(tmp_path / "v2", vendor_key, version="1.2.0")
    first = (await server.deploy((await server.upload(artifact))["id"]))["id"]
    second = (await server.deploy((await server.upload(newer_artifact))["id"]))["id"]
    offer = await device.offer()
    assert offer is not None and offer.deployment_id == first
    await device.install(first)
    offer = await device.offer()
    assert offer is not None and offer.deployment_id == second


async def test_device_busy_with_a_paused_deployment_gets_nothing_else(
    server: Server, artifact: BuiltArtifact, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    [device] = await server.fleet(1)
    newer_artifact = make_artifact(tmp_path / "v2", vendor_key, version="1.2.0")
    first = (await server.deploy((await server.upload(artifact))["id"]))["id"]
    await server.deploy((await server.upload(newer_artifact))["id"])
    await device.report(first, "installing")
    await server.admin.post(f"/api/v1/deployments/{first}/pause")
    assert await device.offer() is None  # mid-install: no other update meanwhile


async def test_report_for_a_foreign_deployment_is_404(
    server: Server, artifact: BuiltArtifact
) -> None:
    member, outsider = await server.fleet(2)
    uploaded = await server.upload(artifact)
    dep = (await server.deploy(uploaded["id"], target={"device_ids": [member.device_id]}))["id"]
    for device, deployment_id in ((outsider, dep), (member, "no-such-deployment")):
        response = await device.report(deployment_id, "downloading")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_engine_tick_is_idempotent(server: Server, artifact: BuiltArtifact) -> None:
    """Ticking again (as another process would) changes nothing once a decision is made."""
    fleet = await server.fleet(2)
    uploaded = await server.upload(artifact)
    dep = (
        await server.deploy(
            uploaded["id"], phases=[{"count": 1, "soak_seconds": 3600}, {"percent": 100}]
        )
    )["id"]
    phases = await _phase_of(server, dep, fleet)
    await phases[0][0].install(dep)
    before = await server.wait_for_deployment(dep, lambda d: d["phase_completed_at"] is not None)
    for _ in range(3):
        await server.state.engine.tick()
    after = await server.deployment(dep)
    assert after == before
    # Once the soak hour has passed (a tick with a later clock), the next phase starts.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    await tick(server.state.db, server.state.notifier, now=later)
    assert (await server.deployment(dep))["current_phase"] == 1
