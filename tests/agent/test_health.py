"""Health checks: all must pass; a failing or hung check fails, with its output logged."""

from __future__ import annotations

import sys
import time

from fleetcast.agent.health import run_health_checks

PY = sys.executable


def test_all_pass() -> None:
    result = run_health_checks([[PY, "-c", "print('ok')"], ["true"]], timeout=5)
    assert result.ok
    assert len([line for line in result.log if "passed" in line]) == 2


def test_failure_stops_and_logs_output() -> None:
    result = run_health_checks(
        [[PY, "-c", "import sys; print('disk full'); sys.exit(3)"], ["true"]], timeout=5
    )
    assert not result.ok
    assert "exit 3" in result.log[0] and any("disk full" in line for line in result.log)
    assert not any("true" in line for line in result.log)  # the second check never ran


def test_hung_check_is_killed_and_fails() -> None:
    """A check that never answers is a failed check, killed with its children."""
    started = time.monotonic()
    result = run_health_checks(
        [
            [
                PY,
                "-c",
                "import subprocess, sys, time; print('starting', flush=True); "
                "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                "time.sleep(60)",
            ]
        ],
        timeout=0.5,
    )
    assert not result.ok and "timed out" in result.log[0]
    assert any("starting" in line for line in result.log)
    assert time.monotonic() - started < 10


def test_missing_command_fails() -> None:
    result = run_health_checks([["/nonexistent/check"]], timeout=5)
    assert not result.ok and "exit 127" in result.log[0]


def test_environment_is_passed() -> None:
    result = run_health_checks(
        [[PY, "-c", "import os, sys; sys.exit(os.environ['FLEETCAST_SLOT'] != 'b')"]],
        timeout=5,
        env={"FLEETCAST_SLOT": "b"},
    )
    assert result.ok
