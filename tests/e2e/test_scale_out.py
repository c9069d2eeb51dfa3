"""Several server processes, one fleet: PostgreSQL, nginx in front, one instance killed.

Two ``fleetcast server`` instances (one of them with ``--workers 2``) share a
PostgreSQL database and a blob directory; a throwaway nginx balances
between them and sends artifact bytes itself (``X-Accel-Redirect``). Real
agents talk to nginx only. Halfway through a three-phase rollout the
instance with two workers is killed (SIGKILL, no clean shutdown); the other
carries on: background work runs exactly once whichever process holds it.

A second scenario stores artifacts in S3 (moto's server mode) and pushes
check-in notices over MQTT: the agents long-poll never, poll only every
minute, and still learn of each phase at once; their downloads follow the
redirect to a presigned URL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fleetcast.cli._api import ManagementClient
from fleetcast.server import Settings, prepare
from fleetcast.sim import SimulatedFleet
from fleetcast.sim.server import free_port
from tests.e2e.conftest import accept_all, wait_deployment, wait_inventory, wait_until
from tests.factories import BuiltArtifact
from tests.pg import temporary_database
from tests.services import mqtt_broker, nginx, nginx_binary, s3_server, wait_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ACCEL_PREFIX = "/_fleetcast_blobs"


@contextmanager
def server_process(
    log: Path, port: int, *args: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``fleetcast server`` in its own process group (so killing it takes its workers too)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "fleetcast", "server", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FLEETCAST_ENGINE_INTERVAL": "0.2", **(env or {})},
            start_new_session=True,
        )
        try:
            if not wait_port("127.0.0.1", port, timeout=60):
                raise AssertionError(f"server on {port} did not start:\n{log.read_text()}")
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def phases_in_order(admin: ManagementClient, deployment_id: str) -> None:
    """Every device reported downloading, installing, rebooting, success exactly once, and
    no phase began before the previous one was finished (a phase advanced twice, or
    early, would show as overlapping phases)."""
    members = admin.get(f"/deployments/{deployment_id}/devices", limit=500)["items"]
    first: dict[int, list[str]] = {}
    last: dict[int, list[str]] = {}
    for member in members:
        history = admin.get(f"/devices/{member['device_id']}/history")["items"]
        states = sorted(
            (e for e in history if e["deployment_id"] == deployment_id), key=lambda e: e["id"]
        )
        assert [e["state"] for e in states] == [
            "downloading",
            "installing",
            "rebooting",
            "success",
        ], member
        first.setdefault(member["phase"], []).append(states[0]["at"])
        last.setdefault(member["phase"], []).append(states[-1]["at"])
    for phase in sorted(first)[1:]:
        assert min(first[phase]) >= max(last[phase - 1]), f"phase {phase} overlapped"


def start_fleet(
    tmp_path: Path, url: str, vendor_pub: Path, image: bytes, count: int, **kwargs: Any
) -> SimulatedFleet:
    fleet = SimulatedFleet(tmp_path / "devices", url, [vendor_pub])
    fleet.add(
        count,
        device_type="acme-gw",
        image=image,
        artifact_name="acme-fw",
        artifact_version="1.0.0",
        **kwargs,
    )
    fleet.start()
    return fleet


PHASES = [
    {"percent": 25, "soak_seconds": 1},
    {"percent": 60, "soak_seconds": 1},
    {"percent": 100, "soak_seconds": 0},
]


def test_two_instances_behind_nginx_survive_losing_one_mid_rollout(
    tmp_path: Path, vendor_pub: Path, release: Callable[[str], BuiltArtifact]
) -> None:
    """An operator runs two servers behind nginx. Mid-rollout one dies without warning;
    nginx sends everything to the other, the rollout completes, every device went
    through each state exactly once, and the phases followed one another."""
    nginx_binary()
    data_dir = tmp_path / "shared"
    with temporary_database() as url, ExitStack() as stack:
        token = prepare(Settings(data_dir=data_dir, database_url=url))
        assert token is not None
        ports = [free_port(), free_port()]
        common = ["--data-dir", str(data_dir), "--database-url", url]
        common += ["--accel-redirect-prefix", ACCEL_PREFIX]
        doomed = stack.enter_context(
            server_process(tmp_path / "a.log", ports[0], *common, "--workers", "2")
        )
        stack.enter_context(server_process(tmp_path / "b.log", ports[1], *common))
        proxy = stack.enter_context(
            nginx(tmp_path / "nginx", [f"127.0.0.1:{p}" for p in ports], data_dir / "blobs")
        )
        admin = stack.enter_context(ManagementClient(proxy.url, token))

        v1, v2 = release("1.0.0"), release("1.1.0")
        admin.upload_artifact(v1.path)
        artifact = admin.upload_artifact(v2.path)
        fleet = start_fleet(
            tmp_path, proxy.url, vendor_pub, v1.image, 8, long_poll=5, poll_interval=0.5
        )
        stack.callback(fleet.stop)
        accept_all(admin, 8)
        wait_inventory(admin, 8, "1.0.0")
        deployment = admin.post(
            "/deployments",
            {
                "name": "acme-fw 1.1.0",
                "artifact_id": artifact["id"],
                "target": {"device_types": ["acme-gw"]},
                "phases": PHASES,
            },
        )
        wait_until(
            "the second phase",
            lambda: admin.get(f"/deployments/{deployment['id']}")["current_phase"] >= 1,
        )
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=30)

        final = wait_deployment(admin, deployment["id"])
        assert final["status"] == "completed"
        assert final["current_phase"] == len(PHASES) - 1
        assert not fleet.errors
        wait_inventory(admin, 8, "1.1.0")
        phases_in_order(admin, deployment["id"])
        assert "Traceback" not in (tmp_path / "b.log").read_text()


def test_s3_storage_and_mqtt_push_with_two_instances(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    vendor_pub: Path,
    release: Callable[[str], BuiltArtifact],
) -> None:
    """Artifacts in S3, check-in notices over MQTT, two stateless instances: devices that
    poll only once a minute still go through a three-phase rollout in seconds, and
    fetch the bytes from the object store."""
    nginx_binary()
    with (
        temporary_database() as url,
        s3_server(monkeypatch) as s3,
        mqtt_broker(tmp_path) as (host, port),
        ExitStack() as stack,
    ):
        prefix = f"fleetcast-e2e-{tmp_path.name}"
        blob_store = f"s3://{s3.bucket}/fw"
        env = {
            "FLEETCAST_S3_ENDPOINT_URL": s3.endpoint_url,
            "FLEETCAST_MQTT_TOPIC_PREFIX": prefix,
        }
        settings = Settings(
            data_dir=tmp_path / "prep", database_url=url, blob_store=blob_store, **env_settings(env)
        )
        token = prepare(settings)
        assert token is not None
        ports = [free_port(), free_port()]
        for name, p in zip("ab", ports, strict=True):
            stack.enter_context(
                server_process(
                    tmp_path / f"{name}.log",
                    p,
                    "--data-dir",
                    str(tmp_path / name),
                    "--database-url",
                    url,
                    "--blob-store",
                    blob_store,
                    "--mqtt-url",
                    f"mqtt://{host}:{port}",
                    env=env,
                )
            )
        proxy = stack.enter_context(
            nginx(tmp_path / "nginx", [f"127.0.0.1:{p}" for p in ports], tmp_path / "unused")
        )
        admin = stack.enter_context(ManagementClient(proxy.url, token))
        v1, v2 = release("1.0.0"), release("1.1.0")
        admin.upload_artifact(v1.path)
        artifact = admin.upload_artifact(v2.path)
        listing: Any = s3.client().list_objects_v2(Bucket=s3.bucket)  # type: ignore[attr-defined]
        assert len(listing["Contents"]) == 2

        fleet = SimulatedFleet(tmp_path / "devices", proxy.url, [vendor_pub])
        devices = fleet.add(
            4,
            device_type="acme-gw",
            image=v1.image,
            artifact_name="acme-fw",
            artifact_version="1.0.0",
            long_poll=0,
            poll_interval=60,
        )
        enrollment = admin.post("/enrollment-tokens", {"expires_in": 3600})["token"]
        for device in devices:
            config = replace(
                device.config,
                enrollment_token=enrollment,
                mqtt_url=f"mqtt://{host}:{port}",
                mqtt_topic_prefix=prefix,
            )
            device.config_path.write_text(config.to_toml())
        fleet.start()
        stack.callback(fleet.stop)
        wait_inventory(admin, 4, "1.0.0")
        deployment = admin.post(
            "/deployments",
            {
                "name": "acme-fw 1.1.0",
                "artifact_id": artifact["id"],
                "target": {"device_types": ["acme-gw"]},
                "phases": PHASES,
            },
        )
        # Without the push, devices polling once a minute would need minutes.
        final = wait_deployment(admin, deployment["id"])
        assert final["status"] == "completed"
        assert not fleet.errors
        phases_in_order(admin, deployment["id"])


def env_settings(env: dict[str, str]) -> dict[str, Any]:
    return {k.removeprefix("FLEETCAST_").lower(): v for k, v in env.items()}
