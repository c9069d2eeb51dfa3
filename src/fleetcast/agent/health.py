"""Health checks: does the freshly booted slot work well enough to keep?

After a trial boot the agent runs each configured command (an argv list, no
shell) with a timeout. All must exit 0 for the slot to be committed. A
command that hangs past its timeout is killed with its whole process group
and counts as a failure: a check that never answers is not a passing check.
The last lines of each command's output go into the journal's log tail, so
a failure report tells the operator *why*.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

_OUTPUT_LINES: Final = 20
_MAX_OUTPUT: Final = 64 * 1024


@dataclass(frozen=True)
class HealthResult:
    """The outcome of all checks: ``ok`` and the lines worth logging."""

    ok: bool
    log: tuple[str, ...]


def _tail(output: bytes) -> list[str]:
    text = output[-_MAX_OUTPUT:].decode("utf-8", errors="replace")
    return [f"  | {line}" for line in text.splitlines()[-_OUTPUT_LINES:]]


def run_command(
    argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> tuple[int | None, list[str]]:
    """Run ``argv`` with a timeout; return its exit code (``None``: timed out) and output tail.

    A command that cannot be started returns exit code 127, like a shell.
    """
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,  # so a timeout kills the command's children too
        )
    except OSError as e:
        return 127, [f"  | cannot start: {e}"]
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return None, _tail(output)
    return proc.returncode, _tail(output)


def check_env(*, slot: str, slot_path: str, name: str, version: str) -> dict[str, str]:
    """The environment health checks (and ``script`` payloads) get about the update."""
    return {
        "FLEETCAST_SLOT": slot,
        "FLEETCAST_SLOT_PATH": slot_path,
        "FLEETCAST_ARTIFACT_NAME": name,
        "FLEETCAST_ARTIFACT_VERSION": version,
    }


def run_health_checks(
    commands: Sequence[Sequence[str]], *, timeout: float, env: Mapping[str, str] | None = None
) -> HealthResult:
    """Run every health-check command; stop at the first failure.

    Args:
        commands: argv lists; none configured means healthy.
        timeout: seconds each command may take.
        env: extra environment (the agent passes the slot and version under test).

    Returns:
        Whether all passed, and a log of what ran.
    """
    log: list[str] = []
    for argv in commands:
        code, output = run_command(argv, timeout=timeout, env=env)
        shown = " ".join(argv)
        if code is None:
            log += [f"health check timed out after {timeout:g}s: {shown}", *output]
            return HealthResult(False, tuple(log))
        if code != 0:
            log += [f"health check failed (exit {code}): {shown}", *output]
            return HealthResult(False, tuple(log))
        log.append(f"health check passed: {shown}")
    return HealthResult(True, tuple(log))


__all__ = ["HealthResult", "check_env", "run_command", "run_health_checks"]
