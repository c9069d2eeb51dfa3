"""Status reports survive a server outage across reboots, and reach it in order.

A real server (in process, over HTTP on loopback) and a real agent: the
server goes away right after the device armed its trial boot, so the
``rebooting`` report cannot be delivered. The device reboots into the new
slot, commits and queues ``success`` behind it, and reboots once more with
the server still away. When the server is back (same data directory and
port), the agent sends what it queued, oldest first: the operator sees the
whole story, ``downloading, installing, rebooting, success``, each once.
A copy of an early report that arrives late (a request that was stuck
somewhere) changes nothing: the server has a newer ``seq``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import Agent, SimulatedDevice, StepResult
from fleetcast.agent.journal import Journal
from fleetcast.cli._api import ManagementClient
from fleetcast.core.wire import DeviceUpdateStatus, StatusReport
from fleetcast.server import Settings
from fleetcast.sim import ServerThread
from tests.agent.conftest import TEST_LIMITS, MiB, noisy_image
from tests.factories import make_artifact, make_image


class Outage:
    """A server that can go away and come back on the same port and data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.settings = Settings(data_dir=data_dir)
        self.thread = ServerThread(self.settings).start()
        assert self.thread.admin_token is not None
        self.admin_token = self.thread.admin_token
        self.url = self.thread.url
        self.up = True

    def stop(self) -> None:
        self.thread.stop()
        self.up = False

    def start(self) -> None:
        self.thread = ServerThread(self.settings, port=self.thread.port).start()
        self.up = True


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[Outage]:
    server = Outage(tmp_path / "server")
    try:
        yield server
    finally:
        if server.up:
            server.stop()


def _queued(device: SimulatedDevice) -> list[str]:
    return [r.report.status.value for r in Journal(device.config.state_dir).load().reports]


def test_reports_queued_while_the_server_is_down_arrive_in_order_after_reboots(
    outage: Outage, tmp_path: Path, vendor_key: Ed25519PrivateKey, trusted_key_file: Path
) -> None:
    """The server is away from the trial boot until after the commit and one more reboot:
    nothing the device had to say is lost, and the server hears it in the order it happened."""
    admin = ManagementClient(outage.url, outage.admin_token)
    artifact = make_artifact(
        tmp_path / "artifacts", vendor_key, version="1.1.0", image=noisy_image("1.1.0", MiB)
    )
    uploaded = admin.upload_artifact(artifact.path)
    device = SimulatedDevice.create(
        tmp_path / "device",
        server_url=outage.url,
        device_type="acme-gw",
        identity={"serial": "SN-OUTAGE"},
        image=make_image("1.0.0", 512 * 1024),
        artifact_name="acme-fw",
        artifact_version="1.0.0",
        trusted_keys=[trusted_key_file],
        long_poll=0,
        poll_interval=0,
        enrollment_token=admin.post("/enrollment-tokens", {"expires_in": 600})["token"],
        limits=TEST_LIMITS,
    )

    def server_goes_away(name: str) -> None:
        if name == "armed":  # journaled with "rebooting" queued, not sent yet
            outage.stop()

    agent = Agent(device.config, on_transition=server_goes_away)
    assert agent.step() is StepResult.IDLE  # signed in, inventory sent, nothing to do
    [registered] = admin.get("/devices", q="SN-OUTAGE")["items"]
    deployment = admin.post(
        "/deployments",
        {
            "name": "outage",
            "artifact_id": uploaded["id"],
            "target": {"device_ids": [registered["id"]]},
        },
    )
    assert agent.step() is StepResult.REBOOT_REQUIRED
    agent.close()
    assert not outage.up and _queued(device) == ["rebooting"]

    device.power_cycle()  # the trial boot of slot B
    agent = Agent(device.config)
    assert agent.step() is StepResult.UPDATED  # committed; nobody to tell
    agent.close()
    assert device.booted_slot() == "b" and not device.bootloader.in_trial()
    assert _queued(device) == ["rebooting", "success"]

    device.power_cycle()  # another reboot, the server still away
    agent = Agent(device.config)
    assert agent.step() is StepResult.RETRY
    agent.close()
    state = Journal(device.config.state_dir).load()
    assert [r.report.status.value for r in state.reports] == ["rebooting", "success"]
    seqs = [r.report.seq for r in state.reports]
    assert seqs[0] is not None and seqs[1] is not None and seqs[0] < seqs[1]

    outage.start()
    agent = Agent(device.config)
    assert agent.step() is StepResult.IDLE  # queue delivered, then nothing to do
    assert _queued(device) == []

    def history() -> list[str]:
        events: list[dict[str, Any]] = admin.get(f"/devices/{registered['id']}/history")["items"]
        return [e["state"] for e in events if e.get("deployment_id") == deployment["id"]]

    assert history() == ["downloading", "installing", "rebooting", "success"]
    [member] = admin.get(f"/deployments/{deployment['id']}/devices")["items"]
    assert member["state"] == "success"

    # A copy of the first report, stuck somewhere all this time, finally arrives.
    agent.client.report_status(
        deployment["id"], StatusReport(DeviceUpdateStatus.DOWNLOADING, progress=0, seq=1)
    )
    assert history() == ["downloading", "installing", "rebooting", "success"]
    agent.close()
    admin.close()
