"""Updates over a hostile network: every update completes correctly or fails cleanly.

Each simulated device (a real agent on simulated hardware) talks to a real
server through its own fault-injecting proxy (``tests/e2e/faultproxy.py``),
seeded differently per device: connections are dropped, stalled, trickled,
truncated, reset, get flipped bits or a wrong ``Content-Length``, anywhere in
authentication, polling, the offer, the artifact download and the status
reports. The devices retry with backoff and resume downloads with ``Range``.

What an operator sees, per device, once the deployment completes:

- ``success``: the device runs 1.1.0, its booted slot holds exactly the signed
  image, the trial is committed; or
- ``failure``: the device still runs 1.0.0 from its committed slot, untouched,
  and the report says why (message and log tail);
- its history lists each state at most once, in order (retried reports are
  not recorded twice). Never a device that booted bytes nobody signed.

A handful of seeds by default; ``FLEETCAST_LONG_FAULTS=1`` runs many more.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice
from fleetcast.agent.config import AgentLimits
from fleetcast.agent.runner import run_agent
from fleetcast.cli._api import ManagementClient
from fleetcast.core.signing import public_key_to_pem
from fleetcast.server import Settings
from fleetcast.sim import ServerThread
from tests.e2e.conftest import wait_deployment, wait_until
from tests.e2e.faultproxy import FaultProxy
from tests.factories import make_artifact, make_image

pytestmark = pytest.mark.e2e

LONG = os.environ.get("FLEETCAST_LONG_FAULTS") == "1"
BATCH = 6
BATCHES = int(os.environ.get("FLEETCAST_FAULT_BATCHES", "25" if LONG else "2"))
ORDER = ("downloading", "installing", "rebooting")
#: Tight bounds so that a fault costs a device seconds, not minutes.
LIMITS = AgentLimits(
    request_timeout=2.0,
    max_retries=3,
    backoff_base=0.05,
    backoff_cap=0.5,
    checkpoint_interval=1024 * 1024,
    max_download_attempts=8,
)
TOTALS: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    data_dir = tmp_path_factory.mktemp("hostile") / "server"
    with ServerThread(Settings(data_dir=data_dir, engine_interval=0.2)) as running:
        yield running
    if TOTALS:
        print(f"\nhostile network: {dict(sorted(TOTALS.items()))}")


def _history_ok(states: list[str]) -> bool:
    """Exactly one terminal state, last; before it each progress state at most once, in order.

    A progress report whose client already gave up can still reach the server
    after a later one (a stalled connection delivered late); the report's
    ``seq`` makes the server ignore it (docs/reliability.md), so the history
    never goes backwards.
    """
    *steps, last = states
    return last in ("success", "failure") and steps == [s for s in ORDER if s in steps]


@pytest.mark.parametrize("batch", range(BATCHES))
def test_updates_over_a_hostile_network_complete_or_fail_cleanly(
    batch: int,
    tmp_path: Path,
    hostile_server: ServerThread,
    vendor_key: Ed25519PrivateKey,
) -> None:
    """Six devices, each behind a proxy with its own seed, update from 1.0.0 to 1.1.0."""
    server = hostile_server
    assert server.admin_token is not None
    admin = ManagementClient(server.url, server.admin_token)
    seeds = range(batch * BATCH, (batch + 1) * BATCH)
    v1 = make_image("1.0.0")
    v2_image = make_image(f"1.1.{batch}", size=2 * 1024 * 1024 + 12345)
    built = make_artifact(
        tmp_path / "artifacts", vendor_key, version=f"1.1.{batch}", image=v2_image
    )
    pub = tmp_path / "vendor.pub"
    pub.write_text(public_key_to_pem(vendor_key.public_key()))
    artifact = admin.upload_artifact(built.path)
    enrollment = admin.post("/enrollment-tokens", {"expires_in": 3600})["token"]
    proxies = {seed: FaultProxy(server.port, seed=seed) for seed in seeds}
    devices = {
        seed: SimulatedDevice.create(
            tmp_path / f"dev-{seed}",
            server_url=proxies[seed].url,
            device_type="acme-gw",
            identity={"serial": f"HOSTILE-{seed}"},
            image=v1,
            artifact_name="acme-fw",
            artifact_version="1.0.0",
            trusted_keys=[pub],
            long_poll=1,
            poll_interval=0.2,
            enrollment_token=enrollment,
            limits=LIMITS,
        )
        for seed in seeds
    }
    ids, deployment, final = roll_out_through_proxies(
        admin, devices, proxies, "HOSTILE-", artifact["id"], f"hostile {batch}"
    )
    assert final["status"] == "completed"
    members = {
        m["device_id"]: m for m in admin.get(f"/deployments/{deployment['id']}/devices")["items"]
    }
    outcomes: collections.Counter[str] = collections.Counter()
    for seed, device in devices.items():
        member = members[ids[seed]]
        state = member["state"]
        outcomes[state] += 1
        booted = device.booted_slot()
        bootloader = device.bootloader
        assert not bootloader.in_trial(), f"seed {seed}: left in a trial boot"
        assert bootloader.committed_slot() == booted, f"seed {seed}"
        if state == "success":
            assert device.installed() == ("acme-fw", f"1.1.{batch}"), f"seed {seed}"
            assert device.slot_bytes(booted) == v2_image, f"seed {seed}: not the signed image"
        else:
            assert state == "failure", f"seed {seed}: ended {state}"
            assert device.installed() == ("acme-fw", "1.0.0"), f"seed {seed}"
            assert device.slot_bytes(booted) == v1, f"seed {seed}: committed slot changed"
            assert member["last_message"], f"seed {seed}: a failure without a reason"
            assert member["log_tail"], f"seed {seed}: a failure without a log tail"
        history = admin.get(f"/devices/{ids[seed]}/history")["items"]
        states = [e["state"] for e in history if e.get("deployment_id") == deployment["id"]]
        assert _history_ok(states), f"seed {seed}: history {states}"
    injected: collections.Counter[str] = collections.Counter()
    for proxy in proxies.values():
        injected.update(proxy.injected)
    TOTALS.update({f"fault {k}": v for k, v in injected.items()})
    TOTALS.update({f"device {k}": v for k, v in outcomes.items()})
    TOTALS["devices"] += len(devices)
    TOTALS["connections"] += sum(p.connections for p in proxies.values())
    TOTALS["requests"] += sum(p.requests for p in proxies.values())
    assert sum(injected.values()) >= len(devices), f"too few faults injected: {injected}"
    assert outcomes["success"] > 0, f"no device got through: {outcomes}, faults {injected}"


def roll_out_through_proxies(
    admin: ManagementClient,
    devices: dict[int, SimulatedDevice],
    proxies: dict[int, FaultProxy],
    serial_prefix: str,
    artifact_id: str,
    name: str,
) -> tuple[dict[int, str], dict[str, Any], dict[str, Any]]:
    """Run an agent per device (serial ``{serial_prefix}{seed}``) until each has sent its
    inventory, deploy ``artifact_id`` to all of them and wait for the deployment to end.

    Returns each seed's device id, the deployment as created and as it ended.
    """
    stop = threading.Event()
    threads = [
        threading.Thread(target=run_agent, args=(d.config, stop), daemon=True)
        for d in devices.values()
    ]
    for thread in threads:
        thread.start()
    try:
        serials = {f"{serial_prefix}{seed}": seed for seed in devices}

        def registered() -> dict[int, str] | None:
            items = admin.get("/devices", q=serial_prefix, limit=500)["items"]
            found = {
                serials[d["identity"]["serial"]]: d["id"]
                for d in items
                if d["identity"].get("serial") in serials and d["artifact_version"] == "1.0.0"
            }
            return found if len(found) == len(serials) else None

        ids = wait_until("every device registered with its inventory", registered, 90)
        deployment = admin.post(
            "/deployments",
            {
                "name": name,
                "artifact_id": artifact_id,
                "target": {"device_ids": list(ids.values())},
            },
        )
        final = wait_deployment(admin, deployment["id"])
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for proxy in proxies.values():
            proxy.close()
    return ids, deployment, final
