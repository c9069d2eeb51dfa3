"""Faults during a real update: the agent process killed, the download cut."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice
from fleetcast.cli._api import ManagementClient
from fleetcast.sim import ServerThread
from tests.e2e.conftest import accept_all, wait_deployment, wait_inventory
from tests.factories import BuiltArtifact, make_artifact, make_image

pytestmark = pytest.mark.e2e


def _device(tmp_path: Path, url: str, vendor_pub: Path, image: bytes, name: str) -> SimulatedDevice:
    return SimulatedDevice.create(
        tmp_path / name,
        server_url=url,
        device_type="acme-gw",
        identity={"serial": name},
        image=image,
        artifact_name="acme-fw",
        artifact_version="1.0.0",
        trusted_keys=[vendor_pub],
        long_poll=2,
        poll_interval=0.2,
    )


def _deploy_everything(admin: ManagementClient, artifact_id: str) -> str:
    deployment = admin.post(
        "/deployments",
        {"name": "all", "artifact_id": artifact_id, "target": {"device_types": ["acme-gw"]}},
    )
    return str(deployment["id"])


def _agent_process(device: SimulatedDevice) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fleetcast", "agent", "--config", str(device.config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_agent_killed_again_and_again_still_converges(
    tmp_path: Path,
    server: ServerThread,
    admin: ManagementClient,
    vendor_pub: Path,
    release: Callable[[str], BuiltArtifact],
    vendor_key: Ed25519PrivateKey,
) -> None:
    """A real `fleetcast agent` process is killed with SIGKILL at random moments of an
    update (download, install, reboot, health check) and started again each time. The
    device never loses its committed slot and ends up on 1.1.0 with one success."""
    v1 = release("1.0.0")
    v2_image = make_image("1.1.0", size=6 * 1024 * 1024)
    v2 = make_artifact(tmp_path / "big", vendor_key, version="1.1.0", image=v2_image)
    artifact = admin.upload_artifact(v2.path)
    device = _device(tmp_path, server.url, vendor_pub, v1.image, "killme")
    process = _agent_process(device)
    try:
        accept_all(admin, 1)
        wait_inventory(admin, 1, "1.0.0")
        dep_id = _deploy_everything(admin, artifact["id"])
        rng = random.Random(1234)
        for _ in range(6):
            time.sleep(rng.uniform(0.1, 0.8))
            process.send_signal(signal.SIGKILL)
            process.wait()
            # The device must always have a committed, bootable slot.
            assert device.installed()[1] in ("1.0.0", "1.1.0")
            process = _agent_process(device)
        final = wait_deployment(admin, dep_id)
    finally:
        process.kill()
        process.wait()
    assert final["status"] == "completed"
    (member,) = admin.get(f"/deployments/{dep_id}/devices")["items"]
    assert member["state"] == "success"
    assert device.installed() == ("acme-fw", "1.1.0")
    booted = device.booted_slot()
    assert device.slot_bytes(booted)[: len(v2_image)] == v2_image
    history = admin.get(f"/devices/{member['device_id']}/history")["items"]
    assert sum(e.get("state") == "success" for e in history) == 1


class CuttingProxy:
    """A TCP proxy that cuts the first artifact download after ``cut_after`` bytes."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts = 0
        self.range_requests: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        cut = False

        def pump_up() -> None:
            nonlocal cut
            try:
                while data := client.recv(65536):
                    text = data.decode("latin-1")
                    if "/download" in text:
                        ranged = [
                            ln for ln in text.split("\r\n") if ln.lower().startswith("range:")
                        ]
                        if ranged:
                            self.range_requests.extend(ranged)
                        elif self.cuts == 0:
                            cut = True
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=pump_up, daemon=True).start()
        sent = 0
        try:
            while data := upstream.recv(65536):
                if cut and sent + len(data) > self.cut_after:
                    client.sendall(data[: self.cut_after - sent])
                    self.cuts += 1
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._closing = True
        self._listener.close()


@pytest.fixture
def proxy(server: ServerThread) -> Iterator[CuttingProxy]:
    # After the agent's first checkpoint (every 4 MiB of content by default).
    p = CuttingProxy(server.port, cut_after=6 * 1024 * 1024)
    yield p
    p.close()


def test_a_download_cut_in_the_middle_resumes_with_range(
    tmp_path: Path,
    server: ServerThread,
    admin: ManagementClient,
    vendor_pub: Path,
    release: Callable[[str], BuiltArtifact],
    proxy: CuttingProxy,
    vendor_key: Ed25519PrivateKey,
) -> None:
    """The connection drops after 6 MiB of an 8 MiB artifact. The agent keeps what it
    wrote, asks for the rest with a Range request, and installs a verified image."""
    v1 = release("1.0.0")
    image = os.urandom(8 * 1024 * 1024)  # incompressible, so the artifact is 8 MiB too
    v2 = make_artifact(tmp_path / "big", vendor_key, version="1.1.0", image=image)
    artifact = admin.upload_artifact(v2.path)
    device = _device(tmp_path, proxy.url, vendor_pub, v1.image, "cutme")
    process = _agent_process(device)
    try:
        accept_all(admin, 1)
        wait_inventory(admin, 1, "1.0.0")
        dep_id = _deploy_everything(admin, artifact["id"])
        final = wait_deployment(admin, dep_id)
    finally:
        process.kill()
        process.wait()
    assert final["status"] == "completed"
    assert proxy.cuts == 1
    assert proxy.range_requests, "the agent resumed with a Range request"
    offset = int(proxy.range_requests[0].split("=")[1].split("-")[0])
    assert offset > 1024 * 1024, "the resume did not start again from the beginning"
    assert device.installed() == ("acme-fw", "1.1.0")
    assert device.slot_bytes(device.booted_slot())[: len(image)] == image
