"""What the device keeps for TUF: the verified target in the journal and at commit.

Journals and slot records written before ADR 0008 have no target: they must
still load (a device updated to this agent mid-update keeps going).
"""

from __future__ import annotations

import json
from pathlib import Path

from fleetcast.agent import Agent, SimulatedDevice, StepResult
from fleetcast.agent.journal import Journal, JournalState, Phase, UpdateInProgress
from fleetcast.agent.slots import InstalledArtifacts, InstalledTarget, SlotContent
from fleetcast.agent.trust.installed import InPlaceTargets
from fleetcast.core.wire import UpdateOffer
from tests.agent.trust.conftest import Releaser, run_update
from tests.agent.trust.evil_server import FleetState

TARGET = InstalledTarget("acme-fw/1.1.0.fca", "ab" * 32, 200)


def _state(fleet: FleetState, release: Releaser, target: InstalledTarget | None) -> JournalState:
    offer = UpdateOffer.from_dict(fleet.offer_release(release("1.1.0", release_counter=200)))
    update = UpdateInProgress(offer, "b", "a", target=target)
    return JournalState(phase=Phase.DOWNLOADING, update=update)


def test_the_journal_keeps_the_verified_target(
    tmp_path: Path, fleet: FleetState, release: Releaser
) -> None:
    journal = Journal(tmp_path)
    journal.save(_state(fleet, release, TARGET))
    loaded = journal.load()
    assert journal.problem is None and loaded.update is not None
    assert loaded.update.target == TARGET


def test_a_journal_without_a_target_still_loads(
    tmp_path: Path, fleet: FleetState, release: Releaser
) -> None:
    """A journal written by an agent before ADR 0008 has no ``target`` key at all."""
    data = _state(fleet, release, None).to_dict()
    assert "target" not in data["update"]
    (tmp_path / "journal.json").write_text(json.dumps(data))
    journal = Journal(tmp_path)
    loaded = journal.load()
    assert journal.problem is None and loaded.update is not None
    assert loaded.update.target is None


def test_slot_records_with_and_without_a_target(tmp_path: Path) -> None:
    record = InstalledArtifacts(tmp_path)
    record.set("a", SlotContent("acme-fw", "1.0.0"))
    record.set("b", SlotContent("acme-fw", "1.1.0", 10, "cd" * 32, TARGET))
    assert record.get("a") == SlotContent("acme-fw", "1.0.0")
    assert record.get("b") == SlotContent("acme-fw", "1.1.0", 10, "cd" * 32, TARGET)
    data = json.loads((tmp_path / "slots.json").read_text())
    data["b"]["target"] = {"path": "x", "release_counter": "high"}
    (tmp_path / "slots.json").write_text(json.dumps(data))
    damaged = record.get("b")
    assert damaged is not None and damaged.version == "1.1.0" and damaged.target is None


def test_an_unreadable_in_place_record_counts_as_empty(tmp_path: Path) -> None:
    record = InPlaceTargets(tmp_path)
    record.set("acme-conf", TARGET)
    assert record.get("acme-conf") == TARGET
    record.path.write_text("{not json")
    assert record.load() == {} and record.problem is not None


def test_an_idle_agent_reports_its_version_every_refresh_interval(
    device: SimulatedDevice, fleet: FleetState, release: Releaser
) -> None:
    """Idle, the agent sends a signed version report and refreshes both repositories once
    per ``refresh_interval`` (3600 s here): two idle polls, one report. After an update,
    the report names the installed target and its release counter."""
    agent = Agent(device.config)
    try:
        assert agent.step() is StepResult.IDLE
        assert agent.step() is StepResult.IDLE
    finally:
        agent.close()
    assert len(fleet.version_reports) == 1
    assert (device.root / "state" / "tuf" / "image" / "timestamp.json").exists()

    v11 = release("1.1.0", release_counter=200)
    fleet.offer_release(v11)
    assert run_update(device)[-1] is StepResult.UPDATED
    agent = Agent(device.config)
    try:
        assert agent.step() is StepResult.IDLE
    finally:
        agent.close()
    installed = fleet.version_reports[-1]["signed"]["installed"]
    assert installed == {
        "target": "acme-fw/1.1.0.fca",
        "sha256": v11.target.hashes["sha256"],
        "release_counter": 200,
    }
