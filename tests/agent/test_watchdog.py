"""Watchdogs: the health phase's deadline, the configured checks, and sd_notify pings."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import pytest

from fleetcast.agent.config import HealthConfig
from fleetcast.agent.health import run_configured_checks
from fleetcast.agent.watchdog import Deadline, SystemdWatchdog, notify
from fleetcast.exceptions import TransportError


def test_deadline_bounds_each_step() -> None:
    now = [100.0]
    deadline = Deadline(10, clock=lambda: now[0])
    assert deadline.bound(30) == 10
    now[0] = 107.0
    assert deadline.bound(30) == pytest.approx(3)
    now[0] = 111.0
    assert deadline.expired() and deadline.bound(30) == 0


def test_hung_check_is_killed_by_the_watchdog_and_fails() -> None:
    """Each command may take 30 s, but the whole phase only 1 s: the hung sleep is
    killed at the watchdog, the later check never runs, the result is a failure."""
    health = HealthConfig(commands=(("sleep", "30"), ("true",)), timeout=30, watchdog=1)
    started = time.monotonic()
    result = run_configured_checks(health)
    assert time.monotonic() - started < 10
    assert not result.ok
    assert "timed out" in result.log[0] and result.log[0].endswith("sleep 30")
    assert not any("true" in line for line in result.log)


def _fake_systemctl(tmp_path: Path, state: str, code: int) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "systemctl"
    tool.write_text(
        f'#!/bin/sh\n[ "$*" = "is-system-running --wait" ] || exit 99\necho {state}\nexit {code}\n'
    )
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize(
    ("state", "code", "allow_degraded", "ok"),
    [
        ("running", 0, False, True),
        ("degraded", 1, False, False),
        ("degraded", 1, True, True),
        ("starting", 1, True, False),
    ],
)
def test_systemd_check(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    state: str,
    code: int,
    allow_degraded: bool,
    ok: bool,
) -> None:
    """systemctl is-system-running --wait decides; a degraded system passes only when allowed.
    (A stand-in systemctl: this machine does not run systemd.)"""
    _fake_systemctl(tmp_path, state, code)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    result = run_configured_checks(HealthConfig(systemd=True, allow_degraded=allow_degraded))
    assert result.ok is ok, result.log
    assert state in result.log[0]


def test_server_check_passes_fails_and_times_out() -> None:
    health = HealthConfig(server=True, watchdog=0.5)
    assert run_configured_checks(health, reach_server=lambda: None).ok

    def refused() -> None:
        raise TransportError("connection refused")

    failed = run_configured_checks(health, reach_server=refused)
    assert not failed.ok and "connection refused" in failed.log[-1]
    hung = run_configured_checks(health, reach_server=lambda: time.sleep(5))
    assert not hung.ok and "timed out" in hung.log[-1]


def test_sd_notify_and_the_watchdog_pings_only_while_promised(tmp_path: Path) -> None:
    """A real unix datagram socket stands in for systemd: READY=1 arrives, WATCHDOG=1
    keeps arriving while the agent's promise holds, and stops once it has run out."""
    path = str(tmp_path / "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000", "WATCHDOG_PID": str(os.getpid())}
    assert notify("STATUS=hello", environ=env)
    assert server.recv(100) == b"STATUS=hello"
    dog = SystemdWatchdog(env)
    assert dog.enabled and dog.interval == pytest.approx(0.3)
    dog.alive(0.5)
    dog.start()
    assert server.recv(100) == b"READY=1"
    assert server.recv(100) == b"WATCHDOG=1"
    time.sleep(0.8)  # the promise ran out
    while True:  # drain what was sent while it held
        server.settimeout(0.05)
        try:
            server.recv(100)
        except TimeoutError:
            break
    server.settimeout(0.5)
    with pytest.raises(TimeoutError):
        server.recv(100)
    dog.stop()
    server.close()


def test_watchdog_is_off_without_systemd() -> None:
    dog = SystemdWatchdog({})
    assert not dog.enabled
    dog.start()  # no socket, no thread: nothing happens
    dog.alive(10)
    dog.stop()
    assert not notify("READY=1", environ={})
