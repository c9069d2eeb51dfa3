"""Restart safety: everything lives in the database, so a new process simply continues."""

from __future__ import annotations

import asyncio

from fleetcast.server import Settings, prepare
from tests.factories import BuiltArtifact
from tests.server.harness import running_server


async def test_server_restart_mid_rollout_loses_nothing(
    settings: Settings, admin_token: str, artifact: BuiltArtifact
) -> None:
    """The server stops after the canary phase; a new one on the same data finishes the job."""
    async with running_server(settings, admin_token) as first:
        fleet = await first.fleet(5)
        uploaded = await first.upload(artifact)
        deployment = await first.deploy(
            uploaded["id"], phases=[{"count": 2, "soak_seconds": 1}, {"percent": 100}]
        )
        dep = deployment["id"]
        members = (await first.admin.get(f"/api/v1/deployments/{dep}/devices")).json()["items"]
        canaries = {m["device_id"] for m in members if m["phase"] == 0}
        for device in fleet:
            if device.device_id in canaries:
                await device.install(dep)
        in_soak = await first.wait_for_deployment(
            dep, lambda d: d["phase_completed_at"] is not None
        )
        assert in_soak["current_phase"] == 0

    # A second start: prepare() is a no-op (no new admin token), the engine picks up.
    assert await asyncio.to_thread(prepare, settings) is None
    async with running_server(settings, admin_token) as second:
        for device in fleet:  # the same device tokens still work: the key is in the database
            device.http = second.http
        advanced = await second.wait_for_deployment(dep, lambda d: d["current_phase"] == 1)
        assert advanced["phases"][0]["counts"] == {"success": 2}
        for device in fleet:
            if device.device_id not in canaries:
                offer = await device.offer()
                assert offer is not None and offer.deployment_id == dep
                await device.install(dep)
        done = await second.wait_for_deployment(dep, lambda d: d["status"] == "completed")
        assert done["counts"] == {"success": 5}
        download = await fleet[0].get(f"/artifacts/{uploaded['id']}/download")
        assert download.content == artifact.path.read_bytes()
