"""An operator drives a real server from the CLI: upload, admit, deploy, steer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice
from fleetcast.core.signing import public_key_to_pem
from fleetcast.server import Settings
from fleetcast.sim import ServerThread
from tests.cli.conftest import CliRunner
from tests.factories import make_artifact


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(Settings(data_dir=tmp_path / "server", engine_interval=0.2)) as running:
        yield running


@pytest.fixture
def operator(cli: CliRunner, server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("FLEETCAST_URL", server.url)
    monkeypatch.setenv("FLEETCAST_TOKEN", server.admin_token or "")
    return cli


def test_upload_admit_deploy_and_steer(
    operator: CliRunner, server: ServerThread, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """Everything an operator does day to day, each with human and JSON output."""
    v2 = make_artifact(tmp_path / "art", vendor_key, version="1.1.0")
    uploaded = operator("--json", "artifact", "upload", str(v2.path))
    assert uploaded.code == 0, uploaded.err
    artifact = json.loads(uploaded.out)
    again = operator("artifact", "upload", str(v2.path))
    assert again.code == 1 and "conflict" in again.err

    listed = operator("artifact", "list")
    assert "acme-fw" in listed.out and "1.1.0" in listed.out

    # A device registers and waits for an operator.
    pub = tmp_path / "vendor.pub"
    pub.write_text(public_key_to_pem(vendor_key.public_key()))
    device = SimulatedDevice.create(
        tmp_path / "dev1",
        server_url=server.url,
        device_type="acme-gw",
        identity={"serial": "SN-1"},
        image=b"old image",
        artifact_name="acme-fw",
        artifact_version="1.0.0",
        trusted_keys=[pub],
    )
    from fleetcast.agent import Agent

    Agent(device.config).step()  # first contact: pending

    pending = json.loads(operator("--json", "devices", "list", "--status", "pending").out)
    assert pending["total"] == 1
    device_id = pending["items"][0]["id"]
    accepted = operator("devices", "accept", device_id)
    assert accepted.code == 0 and "accepted" in accepted.out
    assert operator("devices", "tag", device_id, "lab", "eu").code == 0
    shown = operator("devices", "show", device_id)
    assert "eu, lab" in shown.out or "lab, eu" in shown.out, shown.out

    created = operator(
        "--json", "deploy", "create", "--artifact", "acme-fw@1.1.0", "--tag", "lab",
        "--phase", "1:0:0", "--phase", "100%",
    )  # fmt: skip
    assert created.code == 0, created.err
    dep = json.loads(created.out)
    assert dep["artifact_id"] == artifact["id"]

    assert "paused" in operator("deploy", "pause", dep["id"]).out
    status = json.loads(operator("--json", "deploy", "status", dep["id"]).out)
    assert status["status"] == "paused"
    assert "running" in operator("deploy", "resume", dep["id"]).out
    assert "aborted" in operator("deploy", "abort", dep["id"]).out
    human = operator("deploy", "status", dep["id"])
    assert "aborted" in human.out and "phases" in human.out
    assert dep["id"] in operator("deploy", "list").out


def test_server_errors_reach_the_operator(operator: CliRunner) -> None:
    missing = operator("devices", "show", "no-such-device")
    assert missing.code == 1
    assert "not_found" in missing.err
    bad = operator("deploy", "create", "--artifact", "nope@9.9.9", "-t", "acme-gw")
    assert bad.code == 2 and "no artifact nope 9.9.9" in bad.err


def test_a_wrong_token_is_refused(cli: CliRunner, server: ServerThread) -> None:
    result = cli("--url", server.url, "--token", "wrong", "devices", "list")
    assert result.code == 1
    assert "401" in result.err


def test_upload_files_for_swupdate_and_rauc_devices(operator: CliRunner, tmp_path: Path) -> None:
    """An opaque .swu is uploaded with its name, version and device types; the file name
    DDI clients see defaults to the uploaded file's. --version alone is a usage error."""
    swu = tmp_path / "acme-os-4.2.0.swu"
    swu.write_bytes(b"070702 a signed swupdate image")
    result = operator(
        "--json", "artifact", "upload", str(swu), "--name", "acme-os", "--version", "4.2.0",
        "-t", "acme-swu", "-t", "acme-swu-v2",
    )  # fmt: skip
    assert result.code == 0, result.err
    artifact = json.loads(result.out)
    assert (artifact["format"], artifact["compatible"]) == ("file", ["acme-swu", "acme-swu-v2"])
    assert artifact["details"]["filename"] == "acme-os-4.2.0.swu"
    misuse = operator("artifact", "upload", str(swu), "--version", "4.2.0")
    assert misuse.code == 2 and "--name" in misuse.err
