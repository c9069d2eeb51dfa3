"""Power cuts in the TUF paths: a torn or lost copy of any cached metadata file.

The TUF client (python-tuf's ngclient, in the agent's child process) caches
the trusted metadata under ``<state_dir>/tuf/{image,director}/``; a power cut
while it replaces one of those files can leave it empty, cut short, or with
blocks that never reached the disk (zeros). None of that may brick the
update path: the cached copies are only a cache (the trust anchor is the root
file shipped with the device), so the next update must verify and install as
if the file had never been written, and never trust what the damaged file
says.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetcast.agent import SimulatedDevice, StepResult
from tests.agent.trust.conftest import Releaser, run_update
from tests.agent.trust.evil_server import FleetState

CACHED = [
    ("image", "root.json"),
    ("image", "timestamp.json"),
    ("image", "snapshot.json"),
    ("image", "targets.json"),
    ("image", "bins"),  # the bin that holds the released target
    ("director", "root.json"),
    ("director", "timestamp.json"),
    ("director", "snapshot.json"),
    ("director", "targets.json"),
]


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "torn":
        path.write_bytes(data[: len(data) // 2])
    else:  # the new blocks never reached the disk: right length, zeros
        path.write_bytes(bytes(len(data)))


def _cached(device: SimulatedDevice, repo: str, name: str) -> Path:
    directory = device.root / "state" / "tuf" / repo
    if name == "bins":
        (path,) = [p for p in directory.glob("bins-*.json") if p.stat().st_size > 0]
        return path
    return directory / name


@pytest.mark.parametrize("how", ["torn", "zeros"])
@pytest.mark.parametrize(("repo", "name"), CACHED)
def test_a_damaged_cached_metadata_file_does_not_stop_the_next_update(
    device: SimulatedDevice,
    fleet: FleetState,
    release: Releaser,
    repo: str,
    name: str,
    how: str,
) -> None:
    """1.1.0 installs through TUF; a power cut then damages one cached metadata file;
    1.2.0 still verifies against the shipped roots and installs."""
    fleet.offer_release(release("1.1.0", release_counter=200))
    assert run_update(device)[-1] is StepResult.UPDATED, fleet.reports
    _damage(_cached(device, repo, name), how)

    fleet.offer_release(release("1.2.0", release_counter=300), deployment_id="dep-2")
    results = run_update(device)

    assert results[-1] is StepResult.UPDATED, (results, fleet.reports[-3:])
    assert device.installed() == ("acme-fw", "1.2.0")
    assert fleet.final["dep-2"]["status"] == "success"
