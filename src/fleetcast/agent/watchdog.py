"""Watchdogs: a hung health check fails the update; a hung agent gets restarted.

Two bounds, for two kinds of hang:

- :class:`Deadline`: the whole health phase has ``health.watchdog`` seconds.
  Each check gets what is left of it (never more than its own timeout); a
  check still running when it runs out is killed and counts as a failure,
  so the update is rolled back rather than left waiting forever.
- :class:`SystemdWatchdog`: when systemd runs the agent with ``WatchdogSec=``
  (``packaging/systemd/fleetcast-agent.service``), the agent must send
  ``WATCHDOG=1`` regularly or be killed and restarted. A background thread
  sends it only while the agent has promised to be done by some time
  (:meth:`SystemdWatchdog.alive`): the main loop promises each poll, every
  downloaded chunk promises the next one, each bounded operation (a health
  phase, an external installer) promises its own bound. A step that overruns
  its promise stops the pings, and systemd restarts the agent, which resumes
  from its journal.

The notification protocol is systemd's ``sd_notify``: datagrams on the unix
socket named by ``$NOTIFY_SOCKET`` (``@`` for the abstract namespace); no
library is needed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping


class Deadline:
    """A time budget shared by several steps.

    Args:
        seconds: the whole budget.
        clock: the monotonic clock (tests pass their own).
    """

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        """Seconds left (0 when spent)."""
        return max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        return self.remaining() <= 0

    def bound(self, timeout: float) -> float:
        """``timeout``, cut to what is left of the budget."""
        return min(timeout, self.remaining())


def notify(message: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send one ``sd_notify`` message; return whether a socket was there to take it."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


class SystemdWatchdog:
    """Pings systemd's watchdog while the agent keeps its promises.

    Does nothing (and starts no thread) unless systemd asked for a watchdog
    (``$WATCHDOG_USEC``, for this process if ``$WATCHDOG_PID`` is set).

    Args:
        environ: the environment to read (default: the process's).
        clock: the monotonic clock.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._env = dict(os.environ if environ is None else environ)
        self._clock = clock
        self._until = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.interval: float | None = None
        usec = self._env.get("WATCHDOG_USEC", "")
        pid = self._env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.interval = int(usec) / 1_000_000

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def start(self) -> None:
        """Tell systemd the agent is up and start pinging (``READY=1``)."""
        notify("READY=1", environ=self._env)
        if self.interval is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="fleetcast-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop pinging (``STOPPING=1``)."""
        self._stop.set()
        notify("STOPPING=1", environ=self._env)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def alive(self, for_seconds: float) -> None:
        """Promise that the agent makes progress again within ``for_seconds``."""
        with self._lock:
            self._until = max(self._until, self._clock() + for_seconds)

    def status(self, text: str) -> None:
        """Show ``text`` in ``systemctl status``."""
        notify(f"STATUS={text}", environ=self._env)

    def should_ping(self) -> bool:
        """Whether the agent is still within its promise."""
        with self._lock:
            return self._clock() < self._until

    def _run(self) -> None:
        assert self.interval is not None
        period = self.interval / 3
        while not self._stop.wait(period):
            if self.should_ping():
                with contextlib.suppress(OSError):
                    notify("WATCHDOG=1", environ=self._env)


__all__ = ["Deadline", "SystemdWatchdog", "notify"]
