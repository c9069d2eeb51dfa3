"""The soak benchmark (``bench/soak/soak.py``), short, as a test.

Ten real agents long-poll a real ``fleetcast server`` process while rollouts
run back to back; the server's memory, file descriptors and database size
must stay flat (database: only the history it must keep). ``make test`` runs
it for 20 seconds; ``FLEETCAST_LONG_SOAK=1`` for five minutes, and
``python bench/soak/soak.py --duration N`` for as long as you like.
"""

from __future__ import annotations

import os

import pytest
from bench.soak.soak import SoakReport, check, run_soak

pytestmark = pytest.mark.e2e

DURATION = float(
    os.environ.get(
        "FLEETCAST_SOAK_SECONDS", "300" if os.environ.get("FLEETCAST_LONG_SOAK") == "1" else "20"
    )
)


# The soak lasts DURATION (up to 3x until two rollouts ran); start-up and checks on top.
@pytest.mark.timeout(3 * DURATION + 300)
def test_a_fleet_under_rollouts_keeps_server_resources_flat() -> None:
    report = run_soak(duration=DURATION, devices=10, interval=DURATION / 40)
    print(f"\nsoak {DURATION:.0f}s: {report.rollouts} rollouts\n{report.table()}")
    assert report.rollouts >= 2, "the rollouts did not run"
    assert report.samples[-1].events > report.samples[0].events
    assert report.problems == []


def test_the_soak_check_notices_a_leak() -> None:
    """The bounds are not vacuous: a server whose memory, fds and database creep is caught."""
    from bench.soak.soak import Sample

    leaky = SoakReport(
        samples=[
            Sample(at=i, rss=(100 + 2 * i) << 20, fds=20 + i, db_bytes=10**6 + i * 10**6, events=0)
            for i in range(40)
        ],
        rollouts=3,
        requests_hint=10,
    )
    problems = check(leaky)
    assert len(problems) == 3, problems
