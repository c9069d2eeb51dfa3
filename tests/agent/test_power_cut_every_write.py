"""Power cuts at every write: after each single durable operation of an update.

The agent's durable I/O (:mod:`fleetcast.agent.durable`) runs on a
:class:`~tests.agent.faultydisk.FaultyDisk` that counts every file write,
truncate, fsync, create, rename, unlink and directory fsync, the simulated
U-Boot's own environment writes at power-on included. For a full update, a
delta update and a health-check rollback, one run counts the operations
(N); then, for each cut point n, a fresh device runs the same update until
the power fails right after operation n. The page cache then loses what was
not durable (unsynced content kept, lost or torn; unsynced renames undone,
by a seeded RNG per cut), the device boots again, and a fresh agent from
disk runs to the end against the same fake server.

After every single cut: the device boots; the slot the bootloader falls back
to holds a complete known image and a trial only ever targets the complete
new image; the journal and the slot record are readable. At the end: the
update committed with success reported (or, for the rollback flow, 1.0.0
runs again with failure ``rolled_back`` reported), nothing left in a trial,
no report the server had to refuse.

By default the cuts after every operation except the plain slot-content
writes run (every create, rename, unlink, fsync, directory fsync and
truncate: each journal, slot-record and bootloader-environment step), plus a
seeded sample of ``SAMPLE_WRITES`` of the content writes (most of them are
the download's 16 KiB chunks between two checkpoints, all alike);
``FLEETCAST_LONG_FAULTS=1`` cuts after every operation. The devices live on
a tmpfs when there is one (the fault model, not the real disk, decides what
survives a cut; a real disk's fsyncs would only make the test slow).
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice, durable
from fleetcast.agent.bootloader import other_slot
from fleetcast.agent.journal import Journal
from fleetcast.agent.slots import InstalledArtifacts
from fleetcast.exceptions import DeviceStateError
from tests.agent.conftest import TEST_LIMITS, FakeApi, MiB, PowerCut, drive, noisy_image
from tests.agent.faultydisk import FaultyDisk
from tests.agent.test_delta import DeltaApi, _delta, _offer_delta
from tests.factories import BuiltArtifact, make_artifact

LONG = os.environ.get("FLEETCAST_LONG_FAULTS") == "1"
SAMPLE_WRITES = 30
# Three zstd frames of 1 MiB: two checkpoints, a resume from each.
IMAGE_SIZE = 2 * MiB + 64 * 1024
FAIL_ON_1_2 = [
    sys.executable,
    "-c",
    "import os, sys; sys.exit(os.environ['FLEETCAST_ARTIFACT_VERSION'] == '1.2.0')",
]


@dataclass
class Flow:
    """One update scenario: the factory image, the offered artifact, and how it must end."""

    name: str
    factory_image: bytes
    artifact: BuiltArtifact
    make_api: Callable[[], FakeApi]
    health: list[list[str]]
    succeeds: bool

    @property
    def end_image(self) -> bytes:
        return self.artifact.image if self.succeeds else self.factory_image


def _make_flow(name: str, root: Path, key: Ed25519PrivateKey) -> Flow:
    old = noisy_image("1.0.0", IMAGE_SIZE)
    if name == "rollback":
        artifact = make_artifact(root, key, version="1.2.0", image=noisy_image("1.2.0", IMAGE_SIZE))
    elif name == "full":
        artifact = make_artifact(root, key, version="1.1.0", image=noisy_image("1.1.0", IMAGE_SIZE))
    else:
        new = bytearray(old)
        new[300_000:310_000] = noisy_image("1.1.0", 10_000)
        artifact = make_artifact(root, key, version="1.1.0", image=bytes(new))
        delta_file = _delta(root, old, bytes(new))

        def make_api() -> FakeApi:
            api = DeltaApi()
            _offer_delta(api, artifact, delta_file, old)
            return api

        return Flow(name, old, artifact, make_api, [], succeeds=True)

    def make_plain_api() -> FakeApi:
        api = FakeApi()
        api.offer(artifact)
        return api

    health = [FAIL_ON_1_2] if name == "rollback" else []
    return Flow(name, old, artifact, make_plain_api, health, succeeds=name != "rollback")


def _device(root: Path, flow: Flow, trusted_key_file: Path) -> SimulatedDevice:
    return SimulatedDevice.create(
        root,
        server_url="http://fleetcast.test",
        device_type="acme-gw",
        identity={"serial": "SN-0001"},
        image=flow.factory_image,
        artifact_name="acme-fw",
        artifact_version="1.0.0",
        trusted_keys=[trusted_key_file],
        health_commands=flow.health,
        health_timeout=5,
        long_poll=0,
        poll_interval=0,
        limits=TEST_LIMITS,
    )


def _check_converged(device: SimulatedDevice, api: FakeApi, flow: Flow, where: str) -> None:
    assert api.conflicts == [], where
    final = api.final.get("dep-1")
    assert final is not None, (where, api.statuses())
    assert not device.bootloader.in_trial(), where
    if flow.succeeds:
        assert final.status == "success", (where, final)
        assert device.booted_slot() == "b", where
        assert device.installed() == ("acme-fw", flow.artifact.signed.manifest.version), where
    else:
        assert final.status == "failure" and final.rolled_back, (where, final)
        assert final.message and final.log_tail, where
        assert device.booted_slot() == "a", where
        assert device.installed() == ("acme-fw", "1.0.0"), where
    assert device.slot_bytes(device.booted_slot()) == flow.end_image, where


def _count_operations(root: Path, flow: Flow, trusted_key_file: Path) -> FaultyDisk:
    with durable.use(FaultyDisk()):
        device = _device(root, flow, trusted_key_file)
    api = flow.make_api()
    disk = FaultyDisk()
    with durable.use(disk):
        drive(device, api)
    _check_converged(device, api, flow, "without a cut")
    if flow.name == "delta":
        assert api.sources == [], "the delta flow must not fall back to the full artifact"
    return disk


def _cut_points(ops: list[str], seed: str) -> list[int]:
    """1-based cut points: all of them (long run), or all but a sample of the writes."""
    writes = [n for n, kind in enumerate(ops, 1) if kind == "write"]
    if LONG or len(writes) <= SAMPLE_WRITES:
        return list(range(1, len(ops) + 1))
    sampled = set(random.Random(seed).sample(writes, SAMPLE_WRITES))
    return [n for n, kind in enumerate(ops, 1) if kind != "write" or n in sampled]


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs directory if the system has one (Linux: /dev/shm), else ``tmp_path``."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="fleetcast-cuts-") as name:
        yield Path(name)


def _cut_and_recover(root: Path, flow: Flow, trusted_key_file: Path, n: int) -> None:
    # Around the cut: the same disk model without a cut (no real fsync: fast).
    with durable.use(FaultyDisk()):
        device = _device(root, flow, trusted_key_file)
    api = flow.make_api()
    disk = FaultyDisk(cut_after=n, rng=random.Random(f"{flow.name}-{n}"))
    with durable.use(disk), pytest.raises(PowerCut):
        drive(device, api)
    losses = disk.lose_unsynced()
    where = f"{flow.name}: cut after operation {n} ({disk.ops[-1]}); lost: {losses}"
    with durable.use(FaultyDisk()):
        _recover(device, api, flow, where)


def boots_intact(device: SimulatedDevice, factory: bytes, release: bytes, where: str) -> None:
    """After a cut: the device boots from a slot holding a complete, known image (a
    trial only ever targets the complete release), and the agent's state is readable."""
    try:
        device.power_cycle()
    except DeviceStateError as e:
        raise AssertionError(f"{where}: the device does not boot: {e}") from e
    boot = device.bootloader
    committed = boot.committed_slot()
    good = {"a": factory, "b": release}[committed]
    assert device.slot_bytes(committed) == good, (where, committed)
    if boot.in_trial():
        assert device.slot_bytes(other_slot(committed)) == release, where
    journal = Journal(device.config.state_dir)
    journal.load()
    assert journal.problem is None, (where, journal.problem)
    record = InstalledArtifacts(device.config.state_dir)
    record.load()
    assert record.problem is None, (where, record.problem)


def _recover(device: SimulatedDevice, api: FakeApi, flow: Flow, where: str) -> None:
    boots_intact(device, flow.factory_image, flow.artifact.image, where)
    # A fresh agent from disk finishes the update (or the rollback).
    drive(device, api)
    _check_converged(device, api, flow, where)


@pytest.mark.parametrize("flow_name", ["full", "delta", "rollback"])
def test_power_cut_after_every_durable_operation(
    tmp_path: Path,
    fast_dir: Path,
    vendor_key: Ed25519PrivateKey,
    trusted_key_file: Path,
    flow_name: str,
    record_property: Callable[[str, object], None],
) -> None:
    """The power fails after any single write, fsync, rename or bootloader environment
    write of a full update, a delta update or a rollback: the device always boots a
    committed slot with a complete image, the journal stays readable, and after the
    reboot the agent finishes: the new version committed and success reported, or
    (rollback) 1.0.0 running again with failure rolled_back reported."""
    flow = _make_flow(flow_name, tmp_path / "artifacts", vendor_key)
    counted = _count_operations(tmp_path / "count", flow, trusted_key_file)
    kinds = Counter(counted.ops)
    # The instrumented layer sees every kind of durable operation of an update.
    assert {"create", "write", "fsync", "rename", "fsync_dir"} <= set(kinds), kinds
    if flow_name != "delta":
        assert kinds["truncate"] >= 1, kinds
    points = _cut_points(counted.ops, flow_name)
    for n in points:
        root = fast_dir / f"cut-{n}"
        _cut_and_recover(root, flow, trusted_key_file, n)
        shutil.rmtree(root)
    record_property("operations", len(counted.ops))
    record_property("cut_points", len(points))
    print(f"{flow_name}: {len(counted.ops)} operations {dict(kinds)}; {len(points)} cut points")


def test_faulty_disk_loses_only_what_was_not_durable(tmp_path: Path) -> None:
    """The fault model itself: a synced file and a synced rename survive every cut;
    unsynced content is kept, lost or torn; an unsynced rename can be undone."""
    fates: Counter[str] = Counter()
    for seed in range(40):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        (d / "old").write_bytes(b"o" * 100)
        disk = FaultyDisk(cut_after=7, rng=random.Random(seed))
        with durable.use(disk), pytest.raises(PowerCut):
            fd = durable.open_file(d / "synced", os.O_WRONLY | os.O_CREAT)  # 1 create
            durable.write_all(fd, b"s" * 50)  # 2
            durable.fsync(fd)  # 3
            durable.close(fd)
            durable.fsync_dir(d)  # 4
            fd = durable.open_file(d / "old", os.O_WRONLY)
            durable.write_all(fd, b"n" * 100)  # 5: never synced
            durable.close(fd)
            durable.replace(d / "synced", d / "renamed")  # 6: never made durable
            durable.unlink(d / "renamed")  # 7: cut here
            durable.fsync_dir(d)  # refused: the power is off
        disk.lose_unsynced()
        assert disk.ops == ["create", "write", "fsync", "fsync_dir", "write", "rename", "unlink"]
        names = sorted(p.name for p in d.iterdir())
        assert names in (["old"], ["old", "renamed"], ["old", "synced"]), names
        for name in ("synced", "renamed"):
            if (d / name).exists():
                assert (d / name).read_bytes() == b"s" * 50
        old = (d / "old").read_bytes()
        assert len(old) == 100 and old == b"n" * old.count(b"n") + b"o" * old.count(b"o")
        fates[{0: "lost", 100: "kept"}.get(old.count(b"n"), "torn")] += 1
        fates["/".join(names)] += 1
    assert fates["lost"] and fates["kept"] and fates["torn"], fates
    assert fates["old"] and fates["old/renamed"] and fates["old/synced"], fates
