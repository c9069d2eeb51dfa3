"""The honest baseline: the same server, untampered, gets the update installed.

Without it every attack test could pass with an agent that refuses everything.
"""

from __future__ import annotations

from fleetcast.agent import SimulatedDevice, StepResult
from tests.agent.trust.conftest import Releaser, run_update, slot_record
from tests.agent.trust.evil_server import FleetState


def test_an_honest_tuf_update_installs_and_commits(
    device: SimulatedDevice, fleet: FleetState, release: Releaser
) -> None:
    """The vendor released 1.1.0 (counter 200) and the server directs the device to it:
    the device reports its version, both repositories agree, the artifact matches its
    target, and the device commits 1.1.0, recording the target and its counter."""
    v11 = release("1.1.0", release_counter=200)
    fleet.offer_release(v11)

    results = run_update(device)

    assert results[-1] is StepResult.UPDATED, (results, fleet.reports)
    assert device.installed() == ("acme-fw", "1.1.0")
    assert fleet.final["dep-1"]["status"] == "success"
    running = slot_record(device).get(device.booted_slot())
    assert running is not None and running.target is not None
    assert running.target.path == "acme-fw/1.1.0.fca"
    assert running.target.release_counter == 200
    assert running.target.sha256 == v11.target.hashes["sha256"]
    report = fleet.version_reports[0]["signed"]
    assert report["installed"] == {"target": None, "sha256": None, "release_counter": 0}
    assert (device.root / "state" / "tuf" / "image" / "root.json").exists()
    assert (device.root / "state" / "tuf" / "director" / "targets.json").exists()
