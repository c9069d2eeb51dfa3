"""The server killed with SIGKILL, again and again, in the middle of a phased rollout.

A real ``fleetcast server`` process (SQLite, and PostgreSQL) serves six real
agents a three-phase rollout with soak times. At random moments (downloads,
status reports, engine ticks, phase starts) the server is killed with
SIGKILL and started again on the same data directory and database; the
agents see connection errors, back off, resume their downloads and re-send
their journaled reports.

What the operator sees afterwards, as if nothing had happened:

- the deployment completed, every device on 1.1.0 with the signed image;
- each device's history is exactly ``downloading``, ``installing``,
  ``rebooting``, ``success``: every state once, in order. A report the agent
  could not deliver while the server was down (``rebooting``, say: the agent
  does not hold a trial boot hostage to an unreachable server) waits in its
  journal's queue and is sent before any later one; a request that reached
  the dying server late cannot be recorded after a newer report (``seq``);
- the phases advanced once each and in order: the current phase never went
  back, each phase has one start time, and no device of a phase reported
  before every device of the previous phase had finished and its soak passed.

The same runs with TUF devices (``[trust]``: no vendor key, only the root
files of ``fleetcast keys init``, the artifact released with ``fleetcast
artifact release``): the server dies while it signs director metadata and
while the devices' TUF child processes fetch it, and each device still
installs exactly the released target.

``FLEETCAST_LONG_FAULTS=1`` kills the server more often, over more seeds.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice
from fleetcast.agent.config import AgentLimits, TrustConfig
from fleetcast.agent.runner import run_agent
from fleetcast.agent.slots import InstalledArtifacts
from fleetcast.cli._api import ManagementClient
from fleetcast.core.signing import public_key_to_pem
from fleetcast.sim.server import free_port
from tests.e2e.conftest import wait_until
from tests.e2e.test_tuf_update import _cli
from tests.factories import make_artifact, make_image
from tests.pg import temporary_database

pytestmark = pytest.mark.e2e

LONG = os.environ.get("FLEETCAST_LONG_FAULTS") == "1"
SEEDS = range(int(os.environ.get("FLEETCAST_CRASH_SEEDS", "4" if LONG else "1")))
KILLS = 10 if LONG else 4
DEVICES = 6
SOAK = 2
ORDER = ["downloading", "installing", "rebooting", "success"]


class ServerProcess:
    """``fleetcast server`` as a subprocess that can be killed and started again."""

    def __init__(self, data_dir: Path, port: int, database_url: str | None, log: Path) -> None:
        self.args = [
            sys.executable,
            "-m",
            "fleetcast",
            "server",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
        ]
        if database_url:
            self.args += ["--database-url", database_url]
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._out: IO[bytes] | None = None

    def start(self) -> None:
        self._out = self.log.open("ab")
        env = {**os.environ, "FLEETCAST_ENGINE_INTERVAL": "0.2", "COLUMNS": "200"}
        self.process = subprocess.Popen(self.args, stdout=self._out, stderr=self._out, env=env)
        self.starts += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited: {self.log.read_text()[-3000:]}")
            try:
                httpx.get(f"{self.url}/openapi.json", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        pytest.fail("the server did not come up")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        if self._out is not None:
            self._out.close()

    def admin_token(self) -> str:
        match = re.search(r"FLEETCAST_TOKEN=(\S+)", self.log.read_text())
        assert match, self.log.read_text()
        return match.group(1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    with temporary_database() as url:
        yield url


class PhaseWatch:
    """Polls the deployment while the server is up; records what each poll saw."""

    def __init__(self, url: str, token: str, deployment_id: str) -> None:
        self.seen: list[tuple[int, str | None, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(url, token, deployment_id), daemon=True
        )
        self._thread.start()

    def _run(self, url: str, token: str, deployment_id: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        while not self._stop.is_set():
            try:
                d = httpx.get(
                    f"{url}/api/v1/deployments/{deployment_id}", headers=headers, timeout=2
                ).json()
                self.seen.append((d["current_phase"], d["phase_started_at"], d["status"]))
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _at(event: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(event["at"])


@pytest.mark.parametrize("trust", ["vendor-key", "tuf"])
@pytest.mark.parametrize("seed", SEEDS)
def test_server_killed_during_a_phased_rollout_loses_and_repeats_nothing(
    seed: int,
    trust: str,
    tmp_path: Path,
    database_url: str | None,
    vendor_key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Six devices, three phases with soaks, and the server SIGKILLed at random moments."""
    rng = random.Random(seed)
    server = ServerProcess(tmp_path / "server", free_port(), database_url, tmp_path / "server.log")
    server.start()
    admin = ManagementClient(server.url, server.admin_token())
    pub = tmp_path / "vendor.pub"
    pub.write_text(public_key_to_pem(vendor_key.public_key()))
    v1 = make_image("1.0.0")
    v2_image = make_image("1.1.0", size=3 * 1024 * 1024 + 777)
    v2 = make_artifact(tmp_path / "artifacts", vendor_key, version="1.1.0", image=v2_image)
    artifact = admin.upload_artifact(v2.path)
    keys = tmp_path / "keys"
    tuf: TrustConfig | None = None
    if trust == "tuf":
        monkeypatch.setenv("FLEETCAST_URL", server.url)
        monkeypatch.setenv("FLEETCAST_TOKEN", server.admin_token())
        _cli(monkeypatch, capsys, "keys", "init", "--dir", str(keys), "--bin-bits", "2")
        _cli(monkeypatch, capsys, "artifact", "release", str(v2.path), "--keys", str(keys),
             "--release-counter", "7")  # fmt: skip
        tuf = TrustConfig(keys / "image" / "1.root.json", keys / "director" / "1.root.json")
    enrollment = admin.post("/enrollment-tokens", {"expires_in": 3600})["token"]
    limits = AgentLimits(
        request_timeout=3.0,
        max_retries=3,
        backoff_base=0.1,
        backoff_cap=1.0,
        checkpoint_interval=1024 * 1024,
        max_download_attempts=50,
    )
    devices = [
        SimulatedDevice.create(
            tmp_path / f"dev-{i}",
            server_url=server.url,
            device_type="acme-gw",
            identity={"serial": f"CRASH-{i}"},
            image=v1,
            artifact_name="acme-fw",
            artifact_version="1.0.0",
            trusted_keys=[] if tuf else [pub],
            long_poll=1,
            poll_interval=0.2,
            enrollment_token=enrollment,
            limits=limits,
            trust=tuf,
        )
        for i in range(DEVICES)
    ]
    stop = threading.Event()
    agents = [
        threading.Thread(target=run_agent, args=(d.config, stop), daemon=True) for d in devices
    ]
    for agent in agents:
        agent.start()
    watch: PhaseWatch | None = None
    kills_during_rollout = 0
    try:
        registered = wait_until(
            "six devices on 1.0.0",
            lambda: (
                items
                if len(
                    items := [
                        d
                        for d in admin.get("/devices", q="CRASH-")["items"]
                        if d["artifact_version"] == "1.0.0"
                    ]
                )
                == DEVICES
                else None
            ),
        )
        deployment = admin.post(
            "/deployments",
            {
                "name": "crashy",
                "artifact_id": artifact["id"],
                "target": {"device_ids": [d["id"] for d in registered]},
                "phases": [
                    {"percent": 20, "soak_seconds": SOAK},
                    {"percent": 50, "soak_seconds": SOAK},
                    {"percent": 100},
                ],
            },
        )
        watch = PhaseWatch(server.url, admin._http.headers["Authorization"][7:], deployment["id"])
        deadline = time.monotonic() + 240
        while True:
            time.sleep(rng.uniform(0.2, 1.0))
            status = _status(admin, deployment["id"])
            if status == "completed":
                break
            assert time.monotonic() < deadline, f"rollout did not finish ({status})"
            if kills_during_rollout < KILLS:
                server.kill()
                kills_during_rollout += 1
                time.sleep(rng.uniform(0.0, 1.0))  # devices meet a dead server meanwhile
                server.start()
        final = admin.get(f"/deployments/{deployment['id']}")
        members = admin.get(f"/deployments/{deployment['id']}/devices")["items"]
        histories = {
            m["device_id"]: [
                e
                for e in admin.get(f"/devices/{m['device_id']}/history")["items"]
                if e.get("deployment_id") == deployment["id"]
            ]
            for m in members
        }
    finally:
        if watch is not None:
            watch.stop()
        stop.set()
        for agent in agents:
            agent.join(timeout=30)
        if server.process is not None and server.process.poll() is None:
            server.kill()

    assert kills_during_rollout >= 2, "the rollout finished before the server could be killed"
    assert final["status"] == "completed"
    assert final["current_phase"] == 2
    assert [m["state"] for m in members] == ["success"] * DEVICES
    for device in devices:
        assert device.installed() == ("acme-fw", "1.1.0")
        assert device.slot_bytes(device.booted_slot()) == v2_image
        if tuf is not None:
            running = InstalledArtifacts(device.config.state_dir).get(device.booted_slot())
            assert running is not None and running.target is not None
            assert (running.target.path, running.target.release_counter) == ("acme-fw/1.1.0.fca", 7)
    for device_id, events in histories.items():
        states = [e["state"] for e in events]
        assert states[-1] == "success" and states.count("success") == 1, f"{device_id}: {events}"
        assert len(set(states)) == len(states), f"device {device_id} repeated a state: {events}"
        assert states == ORDER, f"device {device_id}: {events}"

    # Phases: each started once, in order, after the previous one finished and soaked.
    assert watch is not None
    starts: dict[int, set[str | None]] = {}
    last_phase = 0
    for phase, started_at, _status_seen in watch.seen:
        assert phase >= last_phase, f"the current phase went back: {watch.seen}"
        last_phase = phase
        starts.setdefault(phase, set()).add(started_at)
    assert all(len(times) == 1 for times in starts.values()), f"a phase started twice: {starts}"
    by_phase: dict[int, list[str]] = {}
    for m in members:
        by_phase.setdefault(m["phase"], []).append(m["device_id"])
    assert sorted(by_phase) == [0, 1, 2]
    for phase in (1, 2):
        previous_done = max(_at(histories[d][-1]) for d in by_phase[phase - 1])
        first_report = min(_at(histories[d][0]) for d in by_phase[phase])
        assert first_report >= previous_done + dt.timedelta(seconds=SOAK), (
            f"phase {phase} began {first_report}, phase {phase - 1} ended {previous_done}"
        )
    print(
        f"\nserver crash seed {seed} ({trust}): {kills_during_rollout} kills, "
        f"{server.starts} starts"
    )


def _status(admin: ManagementClient, deployment_id: str) -> str:
    status: str = admin.get(f"/deployments/{deployment_id}")["status"]
    return status
