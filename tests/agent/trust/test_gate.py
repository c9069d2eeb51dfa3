"""A refused TUF check is checked again before it is final: a damaged transfer is not an attack.

Over a hostile network a bit flipped in a metadata file breaks its signature
exactly as a forgery does, and the device cannot tell the two apart. So the
agent reports nothing after a refused check: it checks the offer again on a
later poll, from scratch (a new nonce and version report, the metadata
downloaded again), and reports the refusal only after ``limits.max_retries``
checks of the deployment were refused in a row, with the last check's reason.
What an operator sees: a device behind a flaky link still installs the
update; a device under attack still refuses it, only a few polls later, and
nothing is downloaded or armed meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetcast.agent import SimulatedDevice, StepResult
from tests.agent.conftest import TEST_LIMITS
from tests.agent.trust.conftest import (
    Releaser,
    assert_on_committed_slot,
    failure_message,
    run_update,
    tuf_device,
)
from tests.agent.trust.evil_server import EvilServer, FleetState

DAMAGED = ("director", "timestamp.json")


def flip_signature_bit(data: bytes) -> bytes:
    """One bit flipped in the first signature's hex digits (a digit stays a digit)."""
    start = data.index(b'"sig"')
    at = next(i for i in range(start, len(data)) if data[i : i + 1].isdigit())
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@dataclass
class DamagingFleet(FleetState):
    """An honest server behind a link that damages the director's timestamp ``damage`` times."""

    damage: int = 0
    damaged: int = 0

    def metadata(self, repo: str, filename: str) -> bytes | None:
        data = super().metadata(repo, filename)
        if data is None or (repo, filename) != DAMAGED or self.damaged >= self.damage:
            return data
        self.damaged += 1
        return flip_signature_bit(data)


@pytest.fixture
def fleet() -> DamagingFleet:
    return DamagingFleet()


@pytest.fixture
def server(fleet: DamagingFleet) -> Iterator[EvilServer]:
    with EvilServer(fleet) as running:
        yield running


@pytest.fixture
def device(tmp_path: Path, server: EvilServer) -> SimulatedDevice:
    return tuf_device(tmp_path / "device", server)


def test_a_transfer_damaged_once_is_checked_again_and_installs(
    device: SimulatedDevice, fleet: DamagingFleet, release: Releaser
) -> None:
    """The first download of the director's timestamp arrives with a flipped bit: python-tuf
    refuses its signature. The agent reports nothing, checks again on the next poll with
    fresh metadata, and the update installs; the server never hears a failure."""
    fleet.offer_release(release("1.1.0", release_counter=200))
    fleet.damage = 1

    results = run_update(device)

    assert fleet.damaged == 1
    assert results[0] is StepResult.RETRY and results[-1] is StepResult.UPDATED, results
    assert device.installed() == ("acme-fw", "1.1.0")
    assert [r["status"] for _, r in fleet.reports if r["status"] in ("success", "failure")] == [
        "success"
    ]
    # Two checks, each with its own nonce and signed version report.
    nonces = [r["signed"]["nonce"] for r in fleet.version_reports]
    assert len(nonces) == 2 and nonces[0] != nonces[1]


def test_a_transfer_damaged_every_time_fails_after_max_retries_checks(
    device: SimulatedDevice, fleet: DamagingFleet, release: Releaser
) -> None:
    """Every download of the director's timestamp is damaged, as an attacker in the path
    would do it: after ``max_retries`` refused checks the device reports the failure with
    the last check's reason (and the earlier ones in its log); nothing was downloaded,
    and it still boots its committed 1.0.0."""
    fleet.offer_release(release("1.1.0", release_counter=200))
    fleet.damage = 10**6
    limit = TEST_LIMITS.max_retries
    assert limit >= 2, "the test needs at least one check again"

    results = run_update(device)

    assert results == [StepResult.RETRY] * (limit - 1) + [StepResult.FAILED]
    assert fleet.damaged == limit == len(fleet.version_reports)
    message = failure_message(fleet)
    assert "UnsignedMetadataError" in message and "timestamp" in message, message
    log = "\n".join(fleet.final["dep-1"]["log_tail"])
    assert f"TUF check 1 of {limit} of deployment dep-1 refused: TUF:" in log, log
    assert f"TUF check {limit} of {limit} of deployment dep-1 refused; giving up" in log, log
    assert not any("/download" in r for r in fleet.requests)
    assert_on_committed_slot(device)
    assert device.slot_bytes("b") == b""
