"""The update state machine, driven against an in-process fake of the device API."""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import TRANSITIONS, Agent, SimulatedDevice, StepResult, run_agent
from fleetcast.agent.bootloader import BROKEN_IMAGE_MARKER, other_slot
from fleetcast.agent.journal import Journal, Phase
from tests.agent.conftest import (
    CutAt,
    FakeApi,
    MiB,
    PowerCut,
    Tree,
    drive,
    make_bundle,
    make_files_artifact,
    make_tar,
    noisy_image,
    python_script,
    read_tree,
)
from tests.factories import BuiltArtifact, make_artifact

FAIL_ON_1_2 = [
    sys.executable,
    "-c",
    "import os, sys; "
    "print('checking', os.environ['FLEETCAST_ARTIFACT_VERSION']); "
    "sys.exit(1 if os.environ['FLEETCAST_ARTIFACT_VERSION'] == '1.2.0' else 0)",
]


@pytest.fixture
def v11(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> BuiltArtifact:
    return make_artifact(
        tmp_path / "artifacts", vendor_key, version="1.1.0", image=noisy_image("1.1.0", 2 * MiB)
    )


@pytest.fixture
def v12(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> BuiltArtifact:
    return make_artifact(
        tmp_path / "artifacts", vendor_key, version="1.2.0", image=noisy_image("1.2.0", 2 * MiB)
    )


def test_full_update_commits_the_new_slot(
    device: SimulatedDevice, api: FakeApi, v11: BuiltArtifact
) -> None:
    """An operator deploys 1.1.0: the device downloads it into slot B, reboots into it,
    passes its health checks, commits, and reports success; the inventory says 1.1.0."""
    api.offer(v11)
    results = drive(device, api)
    assert results[-1] is StepResult.UPDATED
    assert StepResult.REBOOT_REQUIRED in results
    assert device.booted_slot() == "b"
    assert device.installed() == ("acme-fw", "1.1.0")
    assert device.slot_bytes("b") == v11.image
    assert not device.bootloader.in_trial()
    statuses = api.statuses()
    assert statuses[0] == "downloading"
    assert statuses[-3:] == ["installing", "rebooting", "success"]
    assert any(r.progress and 0 < r.progress < 100 for _, r in api.reports)
    assert api.inventories[-1].artifact_version == "1.1.0"
    assert api.conflicts == []
    assert Journal(device.config.state_dir).load().phase is Phase.IDLE


def test_failed_health_check_rolls_back(
    make_device: Callable[..., SimulatedDevice], api: FakeApi, v12: BuiltArtifact
) -> None:
    """1.2.0 fails its health check after the trial boot: the device reboots into slot A
    (1.0.0 again) and reports failure with rolled_back=true and the check's output."""
    device = make_device(health_commands=[FAIL_ON_1_2])
    api.offer(v12)
    results = drive(device, api)
    assert results[-1] is StepResult.ROLLED_BACK
    assert results.count(StepResult.REBOOT_REQUIRED) == 2  # into B, back to A
    assert device.booted_slot() == "a"
    assert device.installed() == ("acme-fw", "1.0.0")
    final = api.final["dep-1"]
    assert final.status == "failure" and final.rolled_back
    assert any("health check failed" in line for line in final.log_tail)
    assert any("checking 1.2.0" in line for line in final.log_tail)
    assert api.inventories[-1].artifact_version == "1.0.0"


def test_image_that_never_boots_falls_back_by_the_boot_counter(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """A signed 1.1.0 whose kernel panics: U-Boot tries slot B bootlimit times, boots A
    again by itself, and the agent reports failure rolled_back (the new slot never ran)."""
    broken = make_artifact(
        tmp_path / "broken", vendor_key, version="1.1.0", image=BROKEN_IMAGE_MARKER + b"x" * 4096
    )
    api.offer(broken)
    results = drive(device, api)
    assert results[-1] is StepResult.ROLLED_BACK
    assert device.booted_slot() == "a"
    assert api.final["dep-1"].rolled_back
    assert "did not boot" in api.final["dep-1"].message
    assert not device.bootloader.in_trial()


def test_same_version_reports_already_installed(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """Deploying the version the device already runs: no download, report already-installed."""
    api.offer(make_artifact(tmp_path / "same", vendor_key, version="1.0.0"))
    assert drive(device, api)[-1] is StepResult.ALREADY_INSTALLED
    assert api.statuses() == ["already-installed"]
    assert api.sources == []
    assert device.slot_bytes("b") == b""


@pytest.mark.parametrize(
    ("kwargs", "allow_downgrade", "expected"),
    [
        ({"compatible": ("other-board",)}, False, "device types"),
        ({"version": "0.9.0"}, False, "older"),
        ({"depends": {"version": ">=2.0.0"}}, False, "needs installed version"),
    ],
)
def test_incompatible_offer_is_refused_before_touching_a_slot(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    kwargs: dict[str, object],
    allow_downgrade: bool,
    expected: str,
) -> None:
    """An artifact for another board, an unwanted downgrade or an unmet dependency:
    the device reports failure saying why, and downloads nothing."""
    api.offer(
        make_artifact(tmp_path / "bad", vendor_key, **kwargs),  # type: ignore[arg-type]
        allow_downgrade=allow_downgrade,
    )
    assert drive(device, api)[-1] is StepResult.FAILED
    assert api.statuses() == ["failure"]
    assert expected in api.final["dep-1"].message
    assert api.sources == [] and device.slot_bytes("b") == b""


def test_downgrade_allowed_by_the_deployment_installs(
    make_device: Callable[..., SimulatedDevice],
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
) -> None:
    """With allow_downgrade, a device on 1.1.0 goes back to 1.0.0."""
    device = make_device(version="1.1.0")
    api.offer(make_artifact(tmp_path / "old", vendor_key, version="1.0.0"), allow_downgrade=True)
    assert drive(device, api)[-1] is StepResult.UPDATED
    assert device.installed() == ("acme-fw", "1.0.0")


def test_untrusted_signature_is_refused(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path
) -> None:
    """An artifact signed by a key the device does not trust is never downloaded."""
    api.offer(make_artifact(tmp_path / "evil", Ed25519PrivateKey.generate()))
    assert drive(device, api)[-1] is StepResult.FAILED
    assert "untrusted" in api.final["dep-1"].message
    assert api.sources == [] and device.slot_bytes("b") == b""


def test_tampered_payload_fails_without_arming(
    device: SimulatedDevice, api: FakeApi, v11: BuiltArtifact
) -> None:
    """A byte flipped in the artifact on the server: the hash check fails after the
    download, the device reports failure and keeps running 1.0.0 from slot A, unarmed."""
    data = bytearray(v11.path.read_bytes())
    data[-20_000] ^= 0xFF
    v11.path.write_bytes(bytes(data))
    slot_a = device.slot_bytes("a")
    api.offer(v11)
    assert drive(device, api)[-1] is StepResult.FAILED
    assert api.final["dep-1"].status == "failure"
    assert not api.final["dep-1"].rolled_back
    assert device.slot_bytes("a") == slot_a
    assert not device.bootloader.in_trial()
    assert device.booted_slot() == "a"


def test_interrupted_download_resumes_from_the_checkpoint(
    device: SimulatedDevice, api: FakeApi, v11: BuiltArtifact
) -> None:
    """The connection drops after 1.5 MiB: the next step resumes from the last frame
    boundary (not from byte 0) and the update completes with the exact image."""
    api.offer(v11)
    api.fail_download_after = 1536 * 1024
    results = drive(device, api)
    assert StepResult.RETRY in results and results[-1] is StepResult.UPDATED
    first, second = api.sources[0], api.sources[1]
    assert first.opened == [0]
    assert second.opened[0] > 0
    assert second.bytes_served < v11.path.stat().st_size - 512 * 1024
    assert device.slot_bytes("b") == v11.image


def test_abort_before_arming_cancels(
    device: SimulatedDevice, api: FakeApi, v11: BuiltArtifact
) -> None:
    """The operator aborts while the device downloads: the next report gets 409
    deployment_aborted, the device stops, arms nothing and goes back to idle."""
    api.offer(v11)

    def abort_during_download(name: str) -> None:
        if name == "checkpoint":
            api.aborted.add("dep-1")

    agent = Agent(device.config, client=api, on_transition=abort_during_download)
    assert agent.step() is StepResult.ABORTED
    assert not device.bootloader.in_trial()
    assert Journal(device.config.state_dir).load().phase is Phase.IDLE
    assert agent.step() is StepResult.IDLE


def test_unreachable_server_is_retried(
    device: SimulatedDevice, api: FakeApi, v11: BuiltArtifact
) -> None:
    """The server is down: steps return RETRY and nothing changes; once it is back the
    update proceeds."""
    api.offer(v11)
    api.unreachable = True
    agent = Agent(device.config, client=api)
    assert agent.step() is StepResult.RETRY
    api.unreachable = False
    assert drive(device, api)[-1] is StepResult.UPDATED


def test_reports_missed_across_the_trial_boot_are_sent_in_order_with_growing_seq(
    device: SimulatedDevice, api: FakeApi, v11: BuiltArtifact
) -> None:
    """The server goes away once the trial is armed and stays away through the trial
    boot and the commit: the agent keeps ``rebooting`` and ``success`` queued, and once
    the server is back it sends both, oldest first, each with a higher seq than any
    report before it."""
    api.offer(v11)

    def server_goes_away(name: str) -> None:
        if name == "armed":
            api.unreachable = True

    agent = Agent(device.config, client=api, on_transition=server_goes_away)
    assert agent.step() is StepResult.REBOOT_REQUIRED
    device.power_cycle()
    assert Agent(device.config, client=api).step() is StepResult.UPDATED
    assert api.statuses()[-1] == "installing"
    api.unreachable = False
    assert Agent(device.config, client=api).step() is StepResult.IDLE
    assert api.statuses()[0] == "downloading"
    assert api.statuses()[-3:] == ["installing", "rebooting", "success"]
    seqs = [report.seq for _, report in api.reports]
    assert None not in seqs and seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert Journal(device.config.state_dir).load().reports == ()


def _normal_run_transitions(
    make: Callable[[], SimulatedDevice], artifact: BuiltArtifact
) -> list[str]:
    api = FakeApi()
    api.offer(artifact)
    seen: list[str] = []
    drive(make(), api, hook=seen.append)
    return seen


@pytest.mark.parametrize("mode", ["kill", "power"])
@pytest.mark.parametrize("flow", ["update", "rollback"])
def test_power_cut_at_every_transition(
    make_device: Callable[..., SimulatedDevice],
    v11: BuiltArtifact,
    v12: BuiltArtifact,
    flow: str,
    mode: str,
) -> None:
    """Kill the agent (or cut the power and boot again) at every transition of a full
    update and of a rollback. Right after the cut the committed slot (what the bootloader
    falls back to) holds a complete known image, a trial only ever targets a complete
    image, and the journal is readable; a fresh agent then finishes: 1.1.0 committed with
    success reported, or (rollback flow) 1.0.0 with failure rolled_back reported."""
    health = [[*FAIL_ON_1_2]]
    artifact = v11 if flow == "update" else v12
    transitions = _normal_run_transitions(lambda: make_device(health_commands=health), artifact)
    expected_end = "reported-success" if flow == "update" else "reported-failure"
    assert {"checkpoint", "armed", "trial-started", expected_end} <= set(transitions)
    assert set(transitions) <= set(TRANSITIONS)
    occurrences: list[tuple[str, int]] = []
    for i, name in enumerate(transitions):
        occurrences.append((name, transitions[: i + 1].count(name)))
    for name, nth in occurrences:
        device = make_device(health_commands=health)
        factory_image = device.slot_bytes("a")
        api = FakeApi()
        api.offer(artifact)
        cut = CutAt(name, nth)
        with pytest.raises(PowerCut):
            drive(device, api, hook=cut)
        if mode == "power":
            device.power_cycle()
        # The slot the bootloader falls back to always holds a complete, known image.
        boot = device.bootloader
        committed = boot.committed_slot()
        good = {"a": factory_image, "b": artifact.image}[committed]
        assert device.slot_bytes(committed) == good, (name, nth, committed)
        if boot.in_trial():
            assert device.slot_bytes(other_slot(committed)) == artifact.image
        journal = Journal(device.config.state_dir)
        journal.load()
        assert journal.problem is None
        drive(device, api)
        assert api.conflicts == [], (name, nth)
        final = api.final.get("dep-1")
        assert final is not None, (name, nth, api.statuses())
        assert not device.bootloader.in_trial()
        if flow == "update":
            assert final.status == "success", (name, nth)
            assert device.booted_slot() == "b"
            assert device.installed() == ("acme-fw", "1.1.0")
            assert device.slot_bytes("b") == v11.image
        else:
            assert final.status == "failure" and final.rolled_back, (name, nth)
            assert device.booted_slot() == "a"
            assert device.installed() == ("acme-fw", "1.0.0")


def test_corrupt_journal_during_trial_falls_back_to_committed_slot(
    device: SimulatedDevice, api: FakeApi, v11: BuiltArtifact
) -> None:
    """The journal is garbage while a trial boot runs: the agent cannot vouch for the
    trial, so it abandons it, reboots into the committed slot A and says why in its log."""
    api.offer(v11)
    with pytest.raises(PowerCut):
        drive(device, api, hook=CutAt("reported-rebooting"))
    device.power_cycle()
    assert device.booted_slot() == "b" and device.bootloader.in_trial()
    (device.config.state_dir / "journal.json").write_bytes(b"{\x00 not json")
    agent = Agent(device.config, client=api)
    assert agent.step() is StepResult.REBOOT_REQUIRED
    assert any("corrupt" in line for line in agent.state.log)
    assert device.power_cycle() == "a"
    assert not device.bootloader.in_trial()
    assert (device.config.state_dir / "journal.json.corrupt").exists()


def test_run_agent_supervises_reboots_from_disk(
    device: SimulatedDevice, api: FakeApi, v11: BuiltArtifact
) -> None:
    """The supervisor: the agent asks for a reboot, run_agent boots the simulated device
    and starts a fresh Agent from disk, which commits; then it is stopped."""
    api.offer(v11)
    stop = threading.Event()
    agents: list[str] = []

    def hook(name: str) -> None:
        agents.append(name)
        if name == "reported-success":
            stop.set()

    result = run_agent(device.config, stop, client_factory=lambda _: api, on_transition=hook)
    assert result is StepResult.STOPPED
    assert device.booted_slot() == "b" and device.installed() == ("acme-fw", "1.1.0")
    assert api.final["dep-1"].status == "success"


def _reset_tree(root: Path, tree: Tree) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for name, data in tree.items():
        if data is None:
            (root / name).mkdir(parents=True, exist_ok=True)
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)


@pytest.mark.parametrize("mode", ["kill", "power"])
@pytest.mark.parametrize("flow", ["files", "files-script-fails"])
def test_power_cut_at_every_transition_in_place(
    make_device: Callable[..., SimulatedDevice],
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    flow: str,
    mode: str,
) -> None:
    """Kill the agent (or cut the power) at every transition of an in-place update: a
    files artifact that succeeds, and a files + script bundle whose script fails. Right
    after the cut /etc/acme is entirely old or entirely new (or, between the two renames
    of its swap, absent with the complete old tree as backup), and the journal is
    readable. A fresh agent then finishes: a cut before the switch or after the commit
    decision ends in success with the new tree; a cut while the new tree was live (switch,
    scripts, checks) or any cut of the failing bundle ends in failure rolled_back with
    exactly the old tree."""
    old: Tree = {"app.conf": b"level=1\n", "certs": None, "certs/ca.pem": b"old\n"}
    new: Tree = {"app.conf": b"level=2\n", "extra": None, "extra/x": b"x\n"}
    root = tmp_path / "rootfs"
    dest = root / "etc" / "acme"
    if flow == "files":
        artifact = make_files_artifact(tmp_path / "art", vendor_key, new, dest)
    else:
        fail = python_script("print('migration failed'); raise SystemExit(2)")
        artifact = make_bundle(
            tmp_path / "art",
            vendor_key,
            [
                ("conf", "files", make_tar(new), {"dest": str(dest)}),
                ("migrate", "script", fail, {}),
            ],
        )
    _reset_tree(dest, old)
    transitions = _normal_run_transitions(make_device, artifact)
    assert set(transitions) <= set(TRANSITIONS)
    assert {"switch-started", "dest-moved-aside", "payload-switched"} <= set(transitions)
    live = range(transitions.index("switch-started"), len(transitions))
    if "health-passed" in transitions:
        live = range(live.start, transitions.index("health-passed"))
    occurrences = [(name, transitions[: i + 1].count(name)) for i, name in enumerate(transitions)]
    for i, (name, nth) in enumerate(occurrences):
        _reset_tree(dest, old)
        device = make_device()
        api = FakeApi()
        api.offer(artifact)
        with pytest.raises(PowerCut):
            drive(device, api, hook=CutAt(name, nth))
        if mode == "power":
            device.power_cycle()
        backup = dest.with_name(f".{dest.name}.fleetcast-old")
        if dest.exists():
            assert read_tree(dest) in (dict(old), dict(new)), (name, nth)
        else:
            assert name == "dest-moved-aside" and read_tree(backup) == dict(old)
        journal = Journal(device.config.state_dir)
        journal.load()
        assert journal.problem is None
        drive(device, api)
        final = api.final.get("dep-1")
        assert final is not None and api.conflicts == [], (name, nth, api.statuses())
        assert Journal(device.config.state_dir).load().phase is Phase.IDLE
        assert sorted(p.name for p in root.rglob(".*")) == [], (name, nth)
        assert device.booted_slot() == "a" and device.installed() == ("acme-fw", "1.0.0")
        if flow == "files" and i not in live:
            assert final.status == "success", (name, nth, final)
            assert read_tree(dest) == dict(new)
            assert device.installed_in_place() == {"acme-conf": "1.1.0"}
        else:
            assert final.status == "failure" and final.rolled_back, (name, nth, final)
            assert read_tree(dest) == dict(old), (name, nth)
            assert device.installed_in_place() == {}
