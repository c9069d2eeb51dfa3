"""Existing fleets on Fleetcast: Debian's real ``swupdate`` (hawkBit DDI) and ``mender`` clients.

Every scenario runs real client processes against a real server on
loopback, the way an operator moving a fleet would live it: devices keep
their client and configuration, only the server URL changes.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetcast.cli._api import ManagementClient
from fleetcast.server import Settings
from fleetcast.sim import ServerThread, SimulatedFleet
from tests.e2e.clients import (
    DroppingProxy,
    MenderClient,
    Swupdate,
    mender_host_files,
    require_binary,
)
from tests.e2e.conftest import accept_all, wait_deployment, wait_inventory, wait_until
from tests.e2e.swu import SwuSigner, build_swu
from tests.e2e.tls import TlsFiles, make_tls
from tests.factories import BuiltArtifact

pytestmark = pytest.mark.e2e


# ----------------------------------------------------------------- fixtures


@pytest.fixture
def compat_settings(settings: Settings) -> Settings:
    """DDI clients are told to poll every second."""
    return settings.model_copy(update={"ddi_polling_interval": 1})


@pytest.fixture
def plain_server(compat_settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(compat_settings) as running:
        yield running


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path / "tls")


@pytest.fixture
def tls_server(compat_settings: Settings, tls: TlsFiles) -> Iterator[ServerThread]:
    """The same kind of server over HTTPS (the Mender client insists on it)."""
    with ServerThread(compat_settings, tls_cert=tls.server_cert, tls_key=tls.server_key) as running:
        yield running


def _admin(url: str, token: str | None, tls: TlsFiles | None = None) -> ManagementClient:
    assert token is not None
    client = ManagementClient(url, token)
    if tls is not None:  # the CLI's client trusts the system CAs; ours is a test CA
        old = client._http
        client._http = httpx.Client(
            base_url=old.base_url,
            headers=old.headers,
            timeout=30,
            verify=ssl.create_default_context(cafile=str(tls.ca_cert)),
        )
        old.close()
    return client


@pytest.fixture
def swupdate_bin() -> str:
    return require_binary("swupdate")


@pytest.fixture
def mender_bins() -> tuple[str, str]:
    return require_binary("mender"), require_binary("mender-artifact")


@pytest.fixture
def signer(tmp_path: Path) -> tuple[SwuSigner, Path]:
    """The vendor's SWUpdate signing certificate (swupdate -k) and its file."""
    swu_signer = SwuSigner.generate()
    cert = tmp_path / "swu-signer.pem"
    cert.write_bytes(swu_signer.cert_pem)
    return swu_signer, cert


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], None]]]:
    """Things to stop at the end (client processes), in reverse order, whatever happens."""
    stops: list[Callable[[], None]] = []
    yield stops
    for stop in reversed(stops):
        stop()


def _upload_swu(admin: ManagementClient, path: Path, version: str) -> dict[str, Any]:
    result: dict[str, Any] = admin.request(
        "POST",
        "/artifacts",
        params={
            "format": "file",
            "name": "acme-swu",
            "version": version,
            "compatible": ["acme-swu"],
            "filename": f"acme-swu-{version}.swu",
        },
        content=path.read_bytes(),
    )
    return result


def _ddi_device(admin: ManagementClient, controller_id: str) -> tuple[str, str]:
    """Preauthorize a DDI controller and give it a TargetToken; return its id and token."""
    device = admin.post(
        "/devices/preauthorize",
        {"kind": "ddi", "identity": {"controller_id": controller_id}, "device_type": "acme-swu"},
    )
    token = admin.post(f"/devices/{device['id']}/target-token", {})["token"]
    return str(device["id"]), str(token)


def _members(admin: ManagementClient, deployment_id: str) -> dict[str, dict[str, Any]]:
    items = admin.get(f"/deployments/{deployment_id}/devices")["items"]
    return {m["device_id"]: m for m in items}


def _mender_artifact(
    binary: str,
    out: Path,
    *,
    name: str,
    module: str,
    dest: Path,
    scripts: tuple[Path, ...] = (),
) -> Path:
    """Build a single-file or directory update-module artifact with Debian's mender-artifact."""
    work = out.parent / f"{name}-src"
    work.mkdir(parents=True)
    (work / "hello.txt").write_text(f"installed by {name}\n")
    (work / "dest_dir").write_text(f"{dest}\n")
    if module == "single-file":  # what single-file-artifact-gen writes
        (work / "filename").write_text("hello.txt\n")
        files = [work / "hello.txt", work / "dest_dir", work / "filename"]
    else:  # directory-artifact-gen: the tree as update.tar
        with tarfile.open(work / "update.tar", "w") as tar:
            tar.add(work / "hello.txt", arcname="hello.txt")
        files = [work / "update.tar", work / "dest_dir"]
    args = [binary, "write", "module-image", "-T", module, "-n", name, "-t", "acme-mender"]
    args += ["-o", str(out)]
    for path in files:
        args += ["-f", str(path)]
    for script in scripts:
        args += ["-s", str(script)]
    subprocess.run(args, check=True, capture_output=True)
    return out


# ----------------------------------------------------------------- SWUpdate


def test_swupdate_installs_and_confirms_after_restart(
    tmp_path: Path,
    plain_server: ServerThread,
    swupdate_bin: str,
    signer: tuple[SwuSigner, Path],
    cleanup: list[Callable[[], None]],
) -> None:
    """An operator preauthorizes a SWUpdate device and gives it a TargetToken. suricatta
    polls, sends its identify data as configData, downloads the signed .swu, installs it
    (the rawfile handler writes the payload), and reports progress. After its
    confirmation restart (-c 2) it reports success: the deployment completes and the
    device shows the new version."""
    admin = _admin(plain_server.url, plain_server.admin_token)
    payload = os.urandom(200_000)
    target = tmp_path / "device" / "rootfs.img"
    target.parent.mkdir()
    swu = build_swu(tmp_path / "fw.swu", signer[0], version="1.1.0", payload=payload, target=target)
    artifact = _upload_swu(admin, swu, "1.1.0")
    device_id, token = _ddi_device(admin, "swu-0001")
    client = Swupdate(
        tmp_path / "swu-0001", plain_server.url, "swu-0001", token, signer[1], swupdate_bin
    )
    cleanup.append(client.stop)
    client.start()

    def configured() -> dict[str, Any] | None:
        device: dict[str, Any] = admin.get(f"/devices/{device_id}")
        return device if device["attributes"].get("serial") == "swu-0001" else None

    device = wait_until("the device's configData", configured, 30)
    assert device["status"] == "accepted" and device["kind"] == "ddi"

    deployment = admin.post(
        "/deployments",
        {"name": "swu 1.1.0", "artifact_id": artifact["id"], "target": {"device_ids": [device_id]}},
    )
    wait_until(
        "the payload on the device", lambda: target.exists() and target.read_bytes() == payload, 60
    )
    wait_until(
        "swupdate to wait for its test restart",
        lambda: _members(admin, deployment["id"])[device_id]["state"] == "installing",
        30,
    )
    history = [e["state"] for e in admin.get(f"/devices/{device_id}/history")["items"]]
    assert "downloading" in history and "success" not in history

    client.stop()  # the device reboots into the new image and confirms it
    client.start(confirm=2)
    final = wait_deployment(admin, deployment["id"])
    assert final["counts"] == {"success": 1}
    device = admin.get(f"/devices/{device_id}")
    assert (device["artifact_name"], device["artifact_version"]) == ("acme-swu", "1.1.0")
    events = admin.get(f"/devices/{device_id}/history")["items"]
    assert [e["state"] for e in events if e["kind"] == "status"] == [
        "downloading",
        "installing",
        "success",
    ]


def test_swupdate_failed_install_pauses_the_phase(
    tmp_path: Path,
    plain_server: ServerThread,
    swupdate_bin: str,
    signer: tuple[SwuSigner, Path],
    cleanup: list[Callable[[], None]],
) -> None:
    """A .swu whose signed sha256 does not match its payload: swupdate refuses to install
    it and reports the failure with its error lines. The phase allows 40% failures; one
    of its two devices failing is 50%, so the deployment pauses, and the operator sees
    why and the device's log."""
    admin = _admin(plain_server.url, plain_server.admin_token)
    target = tmp_path / "device" / "rootfs.img"
    target.parent.mkdir()
    swu = build_swu(
        tmp_path / "bad.swu",
        signer[0],
        version="1.2.0",
        payload=os.urandom(50_000),
        target=target,
        corrupt_hash=True,
    )
    artifact = _upload_swu(admin, swu, "1.2.0")
    failing_id, token = _ddi_device(admin, "swu-bad")
    idle_id, _ = _ddi_device(admin, "swu-idle")  # never polls: it keeps the phase open
    for device_id in (failing_id, idle_id):
        admin.post(f"/devices/{device_id}/accept")
    client = Swupdate(
        tmp_path / "swu-bad", plain_server.url, "swu-bad", token, signer[1], swupdate_bin
    )
    cleanup.append(client.stop)
    client.start()
    deployment = admin.post(
        "/deployments",
        {
            "name": "bad build",
            "artifact_id": artifact["id"],
            "target": {"device_types": ["acme-swu"]},
            "phases": [{"percent": 100, "max_failure_percent": 40}],
        },
    )
    paused = wait_deployment(admin, deployment["id"], ("paused",))
    assert paused["pause_reason"].startswith("phase 1: 1 of 2 devices failed (50%)")
    failed = _members(admin, deployment["id"])[failing_id]
    assert failed["state"] == "failure"
    assert any("HASH mismatch" in line for line in failed["log_tail"]), failed
    assert not target.exists()


def test_swupdate_resumes_a_dropped_download(
    tmp_path: Path,
    plain_server: ServerThread,
    swupdate_bin: str,
    signer: tuple[SwuSigner, Path],
    cleanup: list[Callable[[], None]],
) -> None:
    """The connection drops after 64 KiB of a 1 MiB image. swupdate resumes the
    download with a Range request where it stopped, and the installed file is exact."""
    admin = _admin(plain_server.url, plain_server.admin_token)
    proxy = DroppingProxy(plain_server.port, cut_after=64 * 1024).start()
    cleanup.append(proxy.stop)
    payload = os.urandom(1024 * 1024)
    target = tmp_path / "device" / "rootfs.img"
    target.parent.mkdir()
    swu = build_swu(
        tmp_path / "big.swu", signer[0], version="2.0.0", payload=payload, target=target
    )
    artifact = _upload_swu(admin, swu, "2.0.0")
    device_id, token = _ddi_device(admin, "swu-flaky")
    client = Swupdate(
        tmp_path / "swu-flaky", proxy.url, "swu-flaky", token, signer[1], swupdate_bin
    )
    cleanup.append(client.stop)
    client.start()
    wait_until(
        "the device to check in",
        lambda: admin.get(f"/devices/{device_id}")["status"] == "accepted",
        30,
    )
    deployment = admin.post(
        "/deployments",
        {"name": "big", "artifact_id": artifact["id"], "target": {"device_ids": [device_id]}},
    )
    wait_until(
        "the payload on the device", lambda: target.exists() and target.read_bytes() == payload, 90
    )
    downloads = [r for r in proxy.requests if "/softwaremodules/" in r]
    assert proxy.cuts == 1 and len(downloads) >= 2, downloads
    assert any("range: bytes=" in r.lower() for r in downloads[1:]), downloads
    client.stop()
    client.start(confirm=2)
    assert wait_deployment(admin, deployment["id"])["counts"] == {"success": 1}


# ----------------------------------------------------------------- Mender


@pytest.fixture
def mender_host(mender_bins: tuple[str, str]) -> Iterator[str]:
    with mender_host_files("factory-1.0") as initial:
        yield initial


def test_mender_client_installs_and_reports(
    tmp_path: Path,
    tls_server: ServerThread,
    tls: TlsFiles,
    mender_bins: tuple[str, str],
    mender_host: str,
    cleanup: list[Callable[[], None]],
) -> None:
    """A Mender client signs its auth request with its own RSA key and waits, pending.
    The operator accepts it; it sends its inventory, gets a single-file artifact built
    with mender-artifact, installs it in daemon mode and reports success."""
    mender, mender_artifact = mender_bins
    url = f"https://localhost:{tls_server.port}"
    admin = _admin(url, tls_server.admin_token, tls)
    dest = tmp_path / "device" / "etc-app"
    built = _mender_artifact(
        mender_artifact, tmp_path / "app.mender", name="app-2.0", module="single-file", dest=dest
    )
    artifact = admin.upload_artifact(built)
    assert (artifact["format"], artifact["compatible"]) == ("mender", ["acme-mender"])
    client = MenderClient(tmp_path / "mender", url, tls.ca_cert, "m-0001", mender)
    cleanup.append(client.stop)
    client.start()
    [device] = accept_all(admin, 1)
    assert device["kind"] == "mender" and device["identity"] == {"serial": "m-0001"}

    def inventoried() -> dict[str, Any] | None:
        d: dict[str, Any] = admin.get(f"/devices/{device['id']}")
        return d if d["device_type"] == "acme-mender" else None

    inventory = wait_until("the Mender inventory", inventoried, 60)
    assert inventory["artifact_name"] == mender_host
    assert "mender_client_version" in inventory["attributes"]

    deployment = admin.post(
        "/deployments",
        {
            "name": "app 2.0",
            "artifact_id": artifact["id"],
            "target": {"device_types": ["acme-mender"]},
        },
    )
    assert wait_deployment(admin, deployment["id"])["counts"] == {"success": 1}
    assert (dest / "hello.txt").read_text() == "installed by app-2.0\n"
    states = [
        e["state"]
        for e in admin.get(f"/devices/{device['id']}/history")["items"]
        if e["kind"] == "status"
    ]
    assert states[0] == "downloading" and states[-1] == "success"
    wait_until(
        "the new artifact in the inventory",
        lambda: admin.get(f"/devices/{device['id']}")["artifact_name"] == "app-2.0",
        30,
    )


def test_mender_client_sees_an_aborted_deployment(
    tmp_path: Path,
    tls_server: ServerThread,
    tls: TlsFiles,
    mender_bins: tuple[str, str],
    mender_host: str,
    cleanup: list[Callable[[], None]],
) -> None:
    """The artifact's ArtifactInstall_Enter script holds the client after the download.
    The operator aborts the deployment meanwhile. The client's next status report (before
    it commits) is refused with 409: it rolls back, its files are as before, and the
    device shows `aborted` (not a failure counted against the rollout)."""
    mender, mender_artifact = mender_bins
    url = f"https://localhost:{tls_server.port}"
    admin = _admin(url, tls_server.admin_token, tls)
    gate = tmp_path / "gate"
    script = tmp_path / "scripts" / "ArtifactInstall_Enter_00_wait"
    script.parent.mkdir()
    script.write_text(
        f"#!/bin/sh\ntouch '{gate}.reached'\n"
        f"for i in $(seq 1 300); do [ -e '{gate}' ] && exit 0; sleep 0.1; done\nexit 1\n"
    )
    script.chmod(0o755)
    dest = tmp_path / "device" / "etc-app"
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("the running version\n")
    built = _mender_artifact(
        mender_artifact,
        tmp_path / "held.mender",
        name="held-3.0",
        module="directory",
        dest=dest,
        scripts=(script,),
    )
    artifact = admin.upload_artifact(built)
    client = MenderClient(tmp_path / "mender", url, tls.ca_cert, "m-0002", mender)
    cleanup.append(client.stop)
    client.start()
    [device] = accept_all(admin, 1)
    wait_until(
        "the Mender inventory",
        lambda: admin.get(f"/devices/{device['id']}")["device_type"] == "acme-mender",
        60,
    )
    deployment = admin.post(
        "/deployments",
        {"name": "held", "artifact_id": artifact["id"], "target": {"device_ids": [device["id"]]}},
    )
    wait_until(
        "the install script to hold the client", lambda: Path(f"{gate}.reached").exists(), 60
    )
    assert _members(admin, deployment["id"])[device["id"]]["state"] == "installing"
    admin.post(f"/deployments/{deployment['id']}/abort")
    gate.touch()
    wait_until(
        "the client to stop",
        lambda: _members(admin, deployment["id"])[device["id"]]["state"] == "aborted",
        60,
    )
    assert "deployment aborted at the backend" in client.output()
    wait_until("the rollback", lambda: sorted(p.name for p in dest.iterdir()) == ["old.txt"], 30)
    final = admin.get(f"/deployments/{deployment['id']}")
    assert final["status"] == "aborted" and final["counts"] == {"aborted": 1}


# ----------------------------------------------------------------- one fleet


def test_one_phased_deployment_across_native_ddi_and_mender(
    tmp_path: Path,
    compat_settings: Settings,
    tls: TlsFiles,
    swupdate_bin: str,
    mender_bins: tuple[str, str],
    mender_host: str,
    signer: tuple[SwuSigner, Path],
    vendor_pub: Path,
    release: Callable[[str], BuiltArtifact],
    cleanup: list[Callable[[], None]],
) -> None:
    """Two native agents, a SWUpdate device and a Mender device are one fleet. One
    deployment names a .fca, a .swu and a Mender artifact; each device gets the one it
    understands, in two phases whose counts include all of them, and all succeed. (Two
    server processes share the database: HTTP for agents and SWUpdate, HTTPS for Mender.)"""
    mender, mender_artifact = mender_bins
    plain = ServerThread(compat_settings).start()
    cleanup.append(plain.stop)
    secure = ServerThread(compat_settings, tls_cert=tls.server_cert, tls_key=tls.server_key)
    cleanup.append(secure.start().stop)
    admin = _admin(plain.url, plain.admin_token)

    v1, v2 = release("1.0.0"), release("1.1.0")
    native_artifact = admin.upload_artifact(v2.path)
    target = tmp_path / "swu-device" / "rootfs.img"
    target.parent.mkdir()
    payload = os.urandom(100_000)
    swu = build_swu(tmp_path / "fw.swu", signer[0], version="1.1.0", payload=payload, target=target)
    swu_artifact = _upload_swu(admin, swu, "1.1.0")
    dest = tmp_path / "mender-device" / "app"
    mender_file = _mender_artifact(
        mender_artifact, tmp_path / "fw.mender", name="fw-1.1.0", module="directory", dest=dest
    )
    mender_row = admin.upload_artifact(mender_file)

    fleet = SimulatedFleet(tmp_path / "native", plain.url, [vendor_pub])
    fleet.add(2, device_type="acme-gw", image=v1.image, artifact_name="acme-fw",
              artifact_version="1.0.0", long_poll=5, poll_interval=0.5)  # fmt: skip
    fleet.start()
    cleanup.append(fleet.stop)
    ddi_id, token = _ddi_device(admin, "swu-mixed")
    swupdate = Swupdate(
        tmp_path / "swu-mixed", plain.url, "swu-mixed", token, signer[1], swupdate_bin
    )
    cleanup.append(swupdate.stop)
    swupdate.start()
    menderc = MenderClient(
        tmp_path / "mender", f"https://localhost:{secure.port}", tls.ca_cert, "m-mixed", mender
    )
    cleanup.append(menderc.stop)
    menderc.start()
    accept_all(admin, 3)  # the two agents and the Mender client; the DDI device was preauthorized
    wait_inventory(admin, 2, "1.0.0")
    wait_until(
        "every device to report its type",
        lambda: (
            {d["device_type"] for d in admin.get("/devices", status="accepted")["items"]}
            == {"acme-gw", "acme-swu", "acme-mender"}
        ),
        60,
    )
    fleet_view = admin.get("/devices")["items"]
    assert sorted(d["kind"] for d in fleet_view) == ["ddi", "mender", "native", "native"]

    deployment = admin.post(
        "/deployments",
        {
            "name": "everyone 1.1.0",
            "artifact_id": native_artifact["id"],
            "alternatives": [swu_artifact["id"], mender_row["id"]],
            "target": {"device_types": ["acme-gw", "acme-swu", "acme-mender"]},
            "phases": [{"count": 2, "max_failure_percent": 0}, {"percent": 100}],
        },
    )
    members = _members(admin, deployment["id"])
    assert len(members) == 4 and all(m["phase"] is not None for m in members.values())
    assert members[ddi_id]["artifact_id"] == swu_artifact["id"]

    wait_until(
        "the payload on the SWUpdate device",
        lambda: target.exists() and target.read_bytes() == payload,
        120,
    )
    wait_until(
        "SWUpdate to wait for its test restart",
        lambda: _members(admin, deployment["id"])[ddi_id]["state"] == "installing",
        60,
    )
    swupdate.stop()
    swupdate.start(confirm=2)
    final = wait_deployment(admin, deployment["id"])
    assert final["counts"] == {"success": 4}
    assert [p["devices"] for p in final["phases"]] == [2, 2]
    assert (dest / "hello.txt").read_text() == "installed by fw-1.1.0\n"
    for device in fleet.devices:
        assert device.installed()[1] == "1.1.0"
    assert fleet.errors == {}
    shutil.rmtree(tmp_path / "native", ignore_errors=True)
