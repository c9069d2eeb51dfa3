"""Power cuts at every write of a TUF update, the TUF client's own metadata writes included.

The flow: a factory-fresh device in TUF mode (it trusts no vendor manifest
key, only the shipped director and image roots) is offered 1.1.0, released
in the image repository and directed to it by the director, by an honest
server (``tests/agent/trust/evil_server.py``: a real HTTP server with two
python-tuf repositories). The agent sends a signed version report, the TUF
client refreshes both repositories and the two agree, the artifact is
downloaded and its whole file checked against the target, the trial boots
and commits, and the target is recorded in the slot record.

As in ``test_power_cut_every_write.py``, one run counts the durable
operations of that update on a :class:`~tests.agent.faultydisk.FaultyDisk`;
then, for each cut point n, a fresh device (offered 1.1.0 in a deployment of
its own) runs the update until the power fails right after operation n, the
page cache loses what was not durable (by a seeded RNG per cut), the device
boots again and a fresh agent from disk runs to the end.

**How python-tuf's writes are counted and cut.** python-tuf persists every
metadata file it trusts (each root version, timestamp, snapshot, targets,
the hash bin) itself, in ``Updater._persist_file``: a temporary file in the
metadata directory, one write, close, ``os.replace`` (no fsync, no directory
sync). In production that runs in the agent's short-lived child process
(``python -m fleetcast.agent.trust``), whose writes a disk model in the
test's process cannot see. So this test, and only this test, runs the
child's work in process, through the same code the child runs
(:func:`fleetcast.agent.trust.verify.verify` on the request parsed from its
JSON, the verdict parsed back from its JSON line: only the pipe is left
out), and replaces ``Updater._persist_file`` with the same four steps over
the agent's durable I/O layer (:mod:`fleetcast.agent.durable`), adding
nothing python-tuf does not do (no fsync). The disk model therefore counts
and cuts python-tuf's creates, writes and renames like the agent's own, and
at a cut tears, empties or undoes them as a real page cache could. Not
counted: the ``root.json`` symlink python-tuf keeps for a start without a
trust anchor, which the agent never makes (it always starts from the
shipped root), and directory creation (as for the agent's own directories).

After every single cut: the device boots; the slot the bootloader falls
back to holds a complete known image and a trial only ever targets the
complete new image; the journal and the slot record are readable. At the
end: 1.1.0 committed, ``success`` reported (and no other final report),
the slot holding exactly the signed image, the TUF target and its release
counter recorded; and the device's next TUF check (the idle refresh, with
a signed version report) passes on whatever metadata the cut left behind.

By default the cuts after every operation of python-tuf run, plus a seeded
sample of ``SAMPLE_AGENT_OPS`` of the agent's own (journal, slot record,
device keys, bootloader environment, slot content: the same steps
``test_power_cut_every_write.py`` cuts one by one for an update without
TUF); ``FLEETCAST_LONG_FAULTS=1`` cuts after every operation. The devices
live on a tmpfs when there is one (``fast_dir``).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tuf.ngclient.updater import Updater

from fleetcast.agent import Agent, SimulatedDevice, StepResult, durable
from fleetcast.agent.slots import InstalledArtifacts
from fleetcast.agent.trust import check
from fleetcast.agent.trust.protocol import TrustRequest, TrustVerdict
from fleetcast.agent.trust.verify import verdict_json, verify
from tests.agent.conftest import MiB, PowerCut, noisy_image
from tests.agent.faultydisk import FaultyDisk
from tests.agent.test_power_cut_every_write import (  # noqa: F401 (fast_dir: a fixture)
    boots_intact,
    fast_dir,
)
from tests.agent.trust.conftest import TERMINAL, tuf_device
from tests.agent.trust.evil_server import EvilServer, FleetState, Release
from tests.factories import make_artifact

LONG = os.environ.get("FLEETCAST_LONG_FAULTS") == "1"
SAMPLE_AGENT_OPS = 40
# Two zstd frames of 1 MiB: a checkpoint between them, a resume from it.
IMAGE_SIZE = MiB + 64 * 1024
RELEASE_COUNTER = 200
MAX_STEPS = 40
FINAL = ("success", "failure", "already-installed")


@dataclass
class TracingDisk(FaultyDisk):
    """The disk model, also noting which file each operation touched."""

    paths: list[Path] = field(default_factory=list)

    def _count(self, kind: str, path: Path) -> None:
        self.paths.append(path)
        super()._count(kind, path)


def _run_child_in_process(request: TrustRequest, *, timeout: float) -> TrustVerdict:
    """What ``python -m fleetcast.agent.trust`` answers, computed in this process.

    The request and the verdict cross the same JSON the pipe would carry.
    """
    del timeout  # nothing to kill: a power cut ends the "child" with the test's exception
    parsed = TrustRequest.from_dict(json.loads(json.dumps(request.to_dict())))
    return TrustVerdict.from_dict(json.loads(verdict_json(verify(parsed))))


def _persist_file(self: Updater, filename: str, data: bytes) -> None:
    """``Updater._persist_file`` of python-tuf, step for step, over the agent's durable I/O.

    python-tuf: ``NamedTemporaryFile(dir=metadata_dir, delete=False)`` (a new
    ``tmp*`` file, 0600), write the bytes, close, ``os.replace`` onto
    ``filename``; on an ``OSError`` remove the temporary file and re-raise.
    """
    temp = Path(self._dir) / f"tmp{secrets.token_hex(4)}"
    created = False
    try:
        fd = durable.open_file(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        created = True
        try:
            durable.write_all(fd, data)
        finally:
            durable.close(fd)
        durable.replace(temp, Path(filename))
    except OSError:
        if created and temp.exists():
            durable.unlink(temp)
        raise


@pytest.fixture(autouse=True)
def tuf_client_on_the_faulty_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The TUF child's work in process, python-tuf's writes through ``fleetcast.agent.durable``."""
    assert callable(getattr(Updater, "_persist_file", None)), (
        "python-tuf no longer persists metadata through Updater._persist_file: "
        "route its writes through fleetcast.agent.durable again"
    )
    monkeypatch.setattr(check, "run_child", _run_child_in_process)
    monkeypatch.setattr(Updater, "_persist_file", _persist_file)


def _tuf_state(path: Path, state_dir: Path) -> bool:
    return path.is_relative_to(state_dir / "tuf")


@dataclass
class Update:
    """The released 1.1.0 on one honest server; each run offers it to a fresh device.

    Every run gets its own deployment, so the server's record of one run (its
    final report, which ends the offer) never touches another's.
    """

    server: EvilServer
    release: Release
    release_image: bytes
    factory_image: bytes = b""

    @property
    def fleet(self) -> FleetState:
        return self.server.state

    def device(self, root: Path, deployment_id: str) -> SimulatedDevice:
        """A factory-fresh TUF device, offered (and directed to) 1.1.0 in ``deployment_id``."""
        self.fleet.offer_release(self.release, deployment_id=deployment_id)
        with durable.use(FaultyDisk()):  # the factory: no cut, no real fsync
            device = tuf_device(root, self.server)
        self.factory_image = device.slot_bytes("a")
        return device

    def drive(self, device: SimulatedDevice, deployment_id: str) -> list[StepResult]:
        """What ``run_agent`` does (reboot = power cycle + fresh Agent) until the update ends."""
        results: list[StepResult] = []
        agent = Agent(device.config)
        try:
            for _ in range(MAX_STEPS):
                result = agent.step()
                results.append(result)
                if result is StepResult.REBOOT_REQUIRED:
                    agent.close()
                    device.power_cycle()
                    agent = Agent(device.config)
                elif result in TERMINAL or (
                    result is StepResult.IDLE and deployment_id in self.fleet.final
                ):
                    return results
        finally:
            agent.close()
        raise AssertionError(f"the agent did not settle: {results}")

    def check_converged(self, device: SimulatedDevice, deployment_id: str, where: str) -> None:
        """1.1.0 committed with exactly the signed image, its target recorded, success
        reported (and no other final report); the next TUF check passes."""
        reports = self.fleet.reports
        finals = [r["status"] for d, r in reports if d == deployment_id and r["status"] in FINAL]
        assert finals and set(finals) == {"success"}, (where, reports)
        boot = device.bootloader
        assert not boot.in_trial(), where
        assert device.booted_slot() == boot.committed_slot() == "b", where
        assert device.installed() == ("acme-fw", "1.1.0"), where
        assert device.slot_bytes("b") == self.release_image, where
        running = InstalledArtifacts(device.config.state_dir).get("b")
        assert running is not None and running.target is not None, where
        assert running.target.path == "acme-fw/1.1.0.fca", where
        assert running.target.sha256 == self.release.target.hashes["sha256"], where
        assert running.target.release_counter == RELEASE_COUNTER, where
        # The next TUF check (what the idle agent runs every refresh_interval, with a
        # signed version report) passes on whatever metadata the cut left behind.
        agent = Agent(device.config)
        try:
            directed = check.check_with_tuf(
                agent.config,
                agent.client,
                agent._device_key,
                installed=running.target,
                deployment_id=None,
            )
        finally:
            agent.close()
        assert directed is None, (where, directed)


def _count_operations(root: Path, update: Update) -> tuple[TracingDisk, Path]:
    device = update.device(root, "dep-count")
    disk = TracingDisk()
    with durable.use(disk):
        results = update.drive(device, "dep-count")
    assert results[-1] is StepResult.UPDATED, (results, update.fleet.reports)
    with durable.use(FaultyDisk()):
        update.check_converged(device, "dep-count", "without a cut")
    return disk, device.config.state_dir


def _cut_points(disk: TracingDisk, state_dir: Path, seed: str) -> list[int]:
    """1-based cut points: all (long run), or every one of the TUF client's plus a sample
    of the agent's own (``test_power_cut_every_write.py`` cuts those of a full update)."""
    ops = list(zip(disk.ops, disk.paths, strict=True))
    agents = [n for n, (_, path) in enumerate(ops, 1) if not _tuf_state(path, state_dir)]
    if LONG or len(agents) <= SAMPLE_AGENT_OPS:
        return list(range(1, len(ops) + 1))
    skipped = set(agents) - set(random.Random(seed).sample(agents, SAMPLE_AGENT_OPS))
    return [n for n in range(1, len(ops) + 1) if n not in skipped]


def _cut_and_recover(root: Path, update: Update, n: int) -> None:
    deployment_id = f"dep-cut-{n}"
    device = update.device(root, deployment_id)
    disk = FaultyDisk(cut_after=n, rng=random.Random(f"tuf-{n}"))
    with durable.use(disk), pytest.raises(PowerCut):
        update.drive(device, deployment_id)
    losses = disk.lose_unsynced()
    where = f"cut after operation {n} ({disk.ops[-1]}); lost: {losses}"
    with durable.use(FaultyDisk()):
        _recover(device, update, deployment_id, where)


def _recover(device: SimulatedDevice, update: Update, deployment_id: str, where: str) -> None:
    boots_intact(device, update.factory_image, update.release_image, where)
    # A fresh agent from disk finishes the update.
    results = update.drive(device, deployment_id)
    assert StepResult.FAILED not in results, (where, results, update.fleet.reports)
    update.check_converged(device, deployment_id, where)


@pytest.fixture
def server() -> Iterator[EvilServer]:
    with EvilServer() as running:
        yield running


def test_power_cut_after_every_durable_operation_of_a_tuf_update(
    tmp_path: Path,
    fast_dir: Path,  # noqa: F811 (the fixture imported above)
    server: EvilServer,
    vendor_key: Ed25519PrivateKey,
    record_property: Callable[[str, object], None],
) -> None:
    """The power fails after any single write, fsync or rename of a TUF-verified update,
    the TUF client's metadata writes included: the device always boots a committed slot
    with a complete image, the journal stays readable, and after the reboot the agent
    commits the released 1.1.0 and reports success; its next TUF check still passes."""
    image = noisy_image("1.1.0", IMAGE_SIZE)
    built = make_artifact(tmp_path / "artifacts", vendor_key, version="1.1.0", image=image)
    release = server.state.release(
        built.path.read_bytes(), built.signed, release_counter=RELEASE_COUNTER
    )
    update = Update(server, release, release_image=image)
    counted, state_dir = _count_operations(tmp_path / "count", update)
    kinds = Counter(counted.ops)
    tuf_kinds = Counter(
        kind
        for kind, path in zip(counted.ops, counted.paths, strict=True)
        if _tuf_state(path, state_dir)
    )
    # Both writers are seen: python-tuf's metadata and the agent's own state.
    assert {"create", "write", "rename"} <= set(tuf_kinds), tuf_kinds
    assert {"create", "write", "fsync", "rename", "fsync_dir", "truncate"} <= set(kinds), kinds
    points = _cut_points(counted, state_dir, "tuf")
    for n in points:
        root = fast_dir / f"cut-{n}"
        _cut_and_recover(root, update, n)
        shutil.rmtree(root)
    tuf_ops = sum(tuf_kinds.values())
    record_property("operations", len(counted.ops))
    record_property("tuf_client_operations", tuf_ops)
    record_property("cut_points", len(points))
    print(
        f"tuf: {len(counted.ops)} operations {dict(kinds)}, {tuf_ops} of them by python-tuf "
        f"{dict(tuf_kinds)}; {len(points)} cut points"
    )
