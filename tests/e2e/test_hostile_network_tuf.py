"""TUF-verified updates over a hostile network: every update completes correctly or fails cleanly.

The operator sets up both TUF repositories with ``fleetcast keys init``,
uploads 1.1.x and releases it with ``fleetcast artifact release``. The devices
trust no vendor manifest key, only the two root files ``keys init`` wrote, so
TUF alone decides what they install. Each talks to the real server through
its own seeded fault-injecting proxy (``tests/e2e/faultproxy.py``), and so does
its TUF child process: besides the sign-in, polls, offer, artifact download
and reports, the nonce, the signed version report and every director and
image metadata file (``/api/device/v1/tuf/...``) get dropped, stalled,
trickled, truncated, reset, bit-flipped or a wrong ``Content-Length``.

A flipped bit in a metadata file breaks its signature as a forgery would:
the agent checks the offer again from scratch, up to ``limits.max_retries``
refused checks in a row, before it reports the refusal
(``fleetcast.agent.trust.gate``).

What an operator sees, per device, once the deployment completes (the same
invariants as ``test_hostile_network.py``):

- ``success``: the device runs 1.1.x, its booted and committed slot holds
  exactly the signed image, and it recorded the released TUF target (path,
  sha256 of the artifact file); or
- ``failure``: the device still runs 1.0.0 from its untouched committed slot,
  and the report says why (message and log tail);
- its history lists each state at most once, in order, then one terminal
  state. Never a device that booted bytes nobody signed.

One batch of a few devices by default; ``FLEETCAST_LONG_FAULTS=1`` runs many
more seeds.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice
from fleetcast.agent.config import TrustConfig
from fleetcast.agent.slots import InstalledArtifacts
from fleetcast.cli._api import ManagementClient
from fleetcast.server import Settings
from fleetcast.sim import ServerThread
from tests.e2e.faultproxy import FaultProxy
from tests.e2e.test_hostile_network import LIMITS, _history_ok, roll_out_through_proxies
from tests.e2e.test_tuf_update import _cli
from tests.factories import make_artifact, make_image

pytestmark = pytest.mark.e2e

LONG = os.environ.get("FLEETCAST_LONG_FAULTS") == "1"
BATCH = 6 if LONG else 4
BATCHES = int(os.environ.get("FLEETCAST_FAULT_BATCHES", "10" if LONG else "1"))
#: Seeds apart from test_hostile_network.py's, so the two tests draw other faults.
FIRST_SEED = 10_000
RETRIED = "checking again with fresh metadata"
TOTALS: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _print_totals() -> Iterator[None]:
    yield
    if TOTALS:
        print(f"\nhostile network, TUF devices: {dict(sorted(TOTALS.items()))}")


def _tuf_device(
    root: Path, proxy: FaultProxy, keys: Path, enrollment: str, seed: int
) -> SimulatedDevice:
    """A factory-fresh device behind ``proxy`` that trusts only the two shipped TUF roots."""
    return SimulatedDevice.create(
        root,
        server_url=proxy.url,
        device_type="acme-gw",
        identity={"serial": f"HOSTILE-TUF-{seed}"},
        image=make_image("1.0.0"),
        artifact_name="acme-fw",
        artifact_version="1.0.0",
        trusted_keys=[],
        long_poll=1,
        poll_interval=0.2,
        enrollment_token=enrollment,
        limits=LIMITS,
        trust=TrustConfig(keys / "image" / "1.root.json", keys / "director" / "1.root.json"),
    )


@pytest.mark.parametrize("batch", range(BATCHES))
def test_tuf_updates_over_a_hostile_network_complete_or_fail_cleanly(
    batch: int,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A few TUF devices, each behind a proxy with its own seed, update from 1.0.0 to a
    released 1.1.x."""
    caplog.set_level(logging.INFO, logger="fleetcast.agent")
    version = f"1.1.{batch}"
    v1 = make_image("1.0.0")
    v2_image = make_image(version, size=640 * 1024 + 12345)
    built = make_artifact(tmp_path / "artifacts", vendor_key, version=version, image=v2_image)
    artifact_sha256 = hashlib.sha256(built.path.read_bytes()).hexdigest()
    keys = tmp_path / "keys"
    seeds = range(FIRST_SEED + batch * BATCH, FIRST_SEED + (batch + 1) * BATCH)
    settings = Settings(data_dir=tmp_path / "server", engine_interval=0.2)
    with (
        ServerThread(settings) as server,
        ManagementClient(server.url, server.admin_token or "") as admin,
    ):
        monkeypatch.setenv("FLEETCAST_URL", server.url)
        monkeypatch.setenv("FLEETCAST_TOKEN", server.admin_token or "")
        _cli(monkeypatch, capsys, "keys", "init", "--dir", str(keys), "--bin-bits", "2")
        artifact = admin.upload_artifact(built.path)
        _cli(monkeypatch, capsys, "artifact", "release", str(built.path), "--keys", str(keys),
             "--release-counter", str(100 + batch))  # fmt: skip
        enrollment = admin.post("/enrollment-tokens", {"expires_in": 3600})["token"]
        proxies = {seed: FaultProxy(server.port, seed=seed) for seed in seeds}
        devices = {
            seed: _tuf_device(tmp_path / f"dev-{seed}", proxies[seed], keys, enrollment, seed)
            for seed in seeds
        }
        ids, deployment, final = roll_out_through_proxies(
            admin, devices, proxies, "HOSTILE-TUF-", artifact["id"], f"hostile tuf {batch}"
        )
        assert final["status"] == "completed"
        members = {
            m["device_id"]: m
            for m in admin.get(f"/deployments/{deployment['id']}/devices")["items"]
        }
        histories = {seed: admin.get(f"/devices/{ids[seed]}/history")["items"] for seed in devices}

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
            assert device.installed() == ("acme-fw", version), f"seed {seed}"
            assert device.slot_bytes(booted) == v2_image, f"seed {seed}: not the signed image"
            running = InstalledArtifacts(device.config.state_dir).get(booted)
            assert running is not None and running.target is not None, f"seed {seed}"
            assert running.target.path == f"acme-fw/{version}.fca", f"seed {seed}"
            assert running.target.sha256 == artifact_sha256, f"seed {seed}: not the target"
            assert running.target.release_counter == 100 + batch, f"seed {seed}"
        else:
            assert state == "failure", f"seed {seed}: ended {state}"
            assert device.installed() == ("acme-fw", "1.0.0"), f"seed {seed}"
            assert device.slot_bytes(booted) == v1, f"seed {seed}: committed slot changed"
            assert member["last_message"], f"seed {seed}: a failure without a reason"
            assert member["log_tail"], f"seed {seed}: a failure without a log tail"
            # What a failure says, without its hashes: "TUF: LengthOrHashMismatchError".
            outcomes["failure: " + ":".join(member["last_message"].split(":")[:2])[:50]] += 1
        states = [e["state"] for e in histories[seed] if e.get("deployment_id") == deployment["id"]]
        assert _history_ok(states), f"seed {seed}: history {states}"

    faulted = [f for proxy in proxies.values() for f in proxy.faulted]
    on_tuf = collections.Counter(fault for fault, request in faulted if "/tuf/" in request)
    injected = collections.Counter(fault for fault, _ in faulted)
    TOTALS.update({f"fault {k}": v for k, v in injected.items()})
    TOTALS.update({f"fault on /tuf/ {k}": v for k, v in on_tuf.items()})
    TOTALS.update({f"device {k}": v for k, v in outcomes.items()})
    TOTALS["TUF checks refused, then checked again"] += sum(
        RETRIED in r.getMessage() for r in caplog.records
    )
    TOTALS["devices"] += len(devices)
    TOTALS["requests"] += sum(p.requests for p in proxies.values())
    assert sum(injected.values()) >= len(devices), f"too few faults injected: {injected}"
    # The faults reach the TUF routes too (metadata, nonce, version reports).
    assert sum(on_tuf.values()) > 0, f"no fault on a /tuf/ request: {faulted}"
    assert outcomes["success"] > 0, f"no device got through: {outcomes}, faults {injected}"
