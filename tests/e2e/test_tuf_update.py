"""A TUF-verified update end to end: the real server, the real CLI, a real agent over HTTP.

The operator sets up both repositories with ``fleetcast keys init``, uploads and
releases 1.1.0 with ``fleetcast artifact release`` (release counter 200), and
deploys it to a device that trusts no vendor manifest key, only the two root
files ``keys init`` wrote. The agent sends a signed version report, its TUF
child refreshes the director and image repositories the server serves, both
agree, the artifact matches its target, and the device commits 1.1.0. The
operator then deploys an artifact that was uploaded but never released: the
server refuses to create the deployment (409 ``artifact_not_released``), so
nothing reaches the device.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import Agent, SimulatedDevice, StepResult
from fleetcast.agent.atomicfile import write_atomic
from fleetcast.agent.slots import InstalledArtifacts
from fleetcast.cli import main as cli_main
from fleetcast.cli._api import ManagementClient
from fleetcast.exceptions import ApiError
from fleetcast.sim import ServerThread
from tests.agent.conftest import TEST_LIMITS
from tests.e2e.conftest import accept_all
from tests.factories import make_artifact, make_image

pytestmark = pytest.mark.e2e


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["fleetcast", *args])
    capsys.readouterr()
    try:
        cli_main()
    except SystemExit as e:
        assert not e.code, capsys.readouterr().err
    return capsys.readouterr().out


def _device(root: Path, server: ServerThread, keys: Path) -> SimulatedDevice:
    device = SimulatedDevice.create(
        root,
        server_url=server.url,
        device_type="acme-gw",
        identity={"serial": "SN-TUF-E2E"},
        image=make_image("1.0.0", 256 * 1024),
        artifact_name="acme-fw",
        artifact_version="1.0.0",
        trusted_keys=[],
        long_poll=0,
        poll_interval=0,
        limits=TEST_LIMITS,
    )
    text = device.config_path.read_text() + (
        f'\n[trust]\nimage_root = "{keys / "image" / "1.root.json"}"\n'
        f'director_root = "{keys / "director" / "1.root.json"}"\n'
    )
    write_atomic(device.config_path, text.encode())
    return device


def _step_until(agent: Agent, device: SimulatedDevice, wanted: set[StepResult]) -> Agent:
    for _ in range(40):
        result = agent.step()
        if result is StepResult.REBOOT_REQUIRED:
            agent.close()
            device.power_cycle()
            agent = Agent(device.config)
        elif result in wanted:
            return agent
        elif result is StepResult.FAILED:
            raise AssertionError("the update failed")
    raise AssertionError(f"never reached {wanted}")


def test_a_released_artifact_installs_through_tuf(
    tmp_path: Path,
    server: ServerThread,
    admin: ManagementClient,
    vendor_key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """See the module docstring: a released artifact installs, an unreleased one is
    never deployed."""
    monkeypatch.setenv("FLEETCAST_URL", server.url)
    monkeypatch.setenv("FLEETCAST_TOKEN", server.admin_token or "")
    monkeypatch.setenv("COLUMNS", "200")
    keys = tmp_path / "keys"
    _cli(monkeypatch, capsys, "keys", "init", "--dir", str(keys), "--bin-bits", "2")
    v11 = make_artifact(tmp_path / "art", vendor_key, version="1.1.0")
    uploaded = admin.upload_artifact(v11.path)
    _cli(monkeypatch, capsys, "artifact", "release", str(v11.path), "--keys", str(keys),
         "--release-counter", "200")  # fmt: skip

    device = _device(tmp_path / "device", server, keys)
    agent = Agent(device.config)
    try:
        agent = _step_until(agent, device, {StepResult.PENDING})
        device_id = accept_all(admin, 1)[0]["id"]
        agent = _step_until(agent, device, {StepResult.IDLE})
        deployment: dict[str, Any] = admin.post(
            "/deployments",
            {"name": "tuf", "artifact_id": uploaded["id"], "target": {"device_ids": [device_id]}},
        )
        agent = _step_until(agent, device, {StepResult.UPDATED})
    finally:
        agent.close()

    assert device.installed() == ("acme-fw", "1.1.0")
    running = InstalledArtifacts(device.root / "state").get(device.booted_slot())
    assert running is not None and running.target is not None
    assert (running.target.path, running.target.release_counter) == ("acme-fw/1.1.0.fca", 200)
    (member,) = admin.get(f"/deployments/{deployment['id']}/devices")["items"]
    assert member["state"] == "success"

    unreleased = make_artifact(tmp_path / "art", vendor_key, version="1.2.0")
    other = admin.upload_artifact(unreleased.path)
    with pytest.raises(ApiError) as refused:
        admin.post(
            "/deployments",
            {"name": "not released", "artifact_id": other["id"],
             "target": {"device_ids": [device_id]}},
        )  # fmt: skip
    assert refused.value.code == "artifact_not_released"
