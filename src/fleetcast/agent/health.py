"""Health checks: does the freshly booted slot work well enough to keep?

After a trial boot the agent runs each configured command (an argv list, no
shell) with a timeout. All must exit 0 for the slot to be committed. A
command that hangs past its timeout is killed with its whole process group
and counts as a failure: a check that never answers is not a passing check.
The last lines of each command's output go into the journal's log tail, so
a failure report tells the operator *why*.

:func:`run_configured_checks` runs what ``[health]`` configures, in this
order, under one :class:`~fleetcast.agent.watchdog.Deadline` of
``health.watchdog`` seconds: ``systemctl is-system-running --wait`` (with
``health.systemd``: the boot must reach ``running``, or ``degraded`` with
``allow_degraded``), "the agent reached the server" (with ``health.server``:
it authenticates with its device key from the new system), then the
commands. A check that outlives the deadline is killed (a hung server call
is abandoned) and fails the update.

If the device reboots or loses power *during* the checks, the journal still
says ``testing``: after a trial boot the bootloader has counted that boot,
so the next boot runs the checks again from the start, and after
``bootlimit`` boots the bootloader returns to the old slot by itself (the
agent then reports the failure, rolled back). An in-place update (no boot
counter) is rolled back instead of checked again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from fleetcast.agent.config import HealthConfig
from fleetcast.agent.watchdog import Deadline

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


SYSTEMD_CHECK: Final = ("systemctl", "is-system-running", "--wait")


def _systemd_check(
    health: HealthConfig, deadline: Deadline, env: Mapping[str, str] | None
) -> tuple[bool, list[str]]:
    shown = " ".join(SYSTEMD_CHECK)
    timeout = deadline.bound(health.timeout)
    code, output = run_command(SYSTEMD_CHECK, timeout=timeout, env=env)
    state = output[-1].removeprefix("  | ").strip() if output else ""
    if code is None:
        return False, [f"health check timed out after {timeout:g}s: {shown}", *output]
    if code == 0 or (health.allow_degraded and state == "degraded"):
        return True, [f"health check passed: {shown} ({state or 'running'})"]
    return False, [f"health check failed (exit {code}, system {state or 'unknown'}): {shown}"]


def _server_check(reach_server: Callable[[], None], deadline: Deadline) -> tuple[bool, list[str]]:
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            reach_server()
        except Exception as e:
            outcome.append(e)
        else:
            outcome.append(None)

    thread = threading.Thread(target=call, name="fleetcast-health-server", daemon=True)
    thread.start()
    thread.join(timeout=deadline.remaining())
    if not outcome:
        return False, [f"health check timed out after {deadline.seconds:g}s: reach the server"]
    if outcome[0] is not None:
        return False, [f"health check failed: cannot reach the server: {outcome[0]}"]
    return True, ["health check passed: reached the server"]


def run_configured_checks(
    health: HealthConfig,
    *,
    env: Mapping[str, str] | None = None,
    reach_server: Callable[[], None] | None = None,
    deadline: Deadline | None = None,
) -> HealthResult:
    """Run every check ``[health]`` configures, within ``health.watchdog`` seconds.

    Args:
        health: what to check.
        env: extra environment for the commands.
        reach_server: authenticates with the server (raises if it cannot);
            used when ``health.server`` is set.
        deadline: the budget (default: ``health.watchdog`` from now).

    Returns:
        Whether all passed, and a log of what ran.
    """
    deadline = deadline if deadline is not None else Deadline(health.watchdog)
    log: list[str] = []
    if health.systemd:
        ok, lines = _systemd_check(health, deadline, env)
        log += lines
        if not ok:
            return HealthResult(False, tuple(log))
    if health.server:
        if reach_server is None:
            return HealthResult(False, (*log, "health check failed: no way to reach the server"))
        ok, lines = _server_check(reach_server, deadline)
        log += lines
        if not ok:
            return HealthResult(False, tuple(log))
    for argv in health.commands:
        if deadline.expired():
            log.append(f"health watchdog expired after {deadline.seconds:g}s")
            return HealthResult(False, tuple(log))
        result = run_health_checks([argv], timeout=deadline.bound(health.timeout), env=env)
        log += result.log
        if not result.ok:
            return HealthResult(False, tuple(log))
    return HealthResult(True, tuple(log))


__all__ = [
    "SYSTEMD_CHECK",
    "HealthResult",
    "check_env",
    "run_command",
    "run_configured_checks",
    "run_health_checks",
]
