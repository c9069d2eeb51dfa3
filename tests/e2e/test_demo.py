"""`fleetcast demo` does what the README promises."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_a_phased_rollout_with_one_rollback() -> None:
    """The demo (here with 10 devices) ends with every device but one canary on 1.1.0,
    the canary rolled back to 1.0.0, a summary table, and exit status 0."""
    result = subprocess.run(
        [sys.executable, "-m", "fleetcast", "demo", "--devices", "10"],
        capture_output=True,
        text=True,
        timeout=240,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rollout summary" in result.stdout
    assert "rolled back" in result.stdout
    assert "9 of 10 devices updated to 1.1.0" in result.stdout
