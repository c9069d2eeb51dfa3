"""Running the device's own tools: ``fw_setenv``, ``grub-editenv``, ``rauc``, ``swupdate``.

Every backend that drives an external program goes through :func:`run_tool`,
so each call is bounded the same way:

- an argv list, never a shell;
- a timeout, after which the whole process group is killed (a tool that
  hangs on a stuck flash chip must not hang the agent);
- output read into memory only up to a bound (the rest is discarded);
- failures to start or to finish become :class:`~fleetcast.exceptions.DeviceStateError`
  naming the command, so the journal's log tail says what went wrong.

A non-zero exit is *not* an exception here: the caller decides what it
means (``fw_printenv`` of an unset variable, ``swupdate`` refusing an image).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Final

from fleetcast.exceptions import DeviceStateError

MAX_OUTPUT: Final = 1024 * 1024


@dataclass(frozen=True)
class ToolResult:
    """What a finished tool returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def command(self) -> str:
        return " ".join(self.argv)

    def tail(self, lines: int = 20) -> list[str]:
        """The last lines of stderr and stdout, for the journal's log tail."""
        text = (self.stdout + "\n" + self.stderr).strip()
        return [f"  | {line}" for line in text.splitlines()[-lines:]]

    def describe(self) -> str:
        """``command exited N: <last line of stderr or stdout>``."""
        last = (self.stderr.strip() or self.stdout.strip()).splitlines()
        detail = f": {last[-1]}" if last else ""
        return f"{self.command} exited {self.returncode}{detail}"


def _read_bounded(fh: IO[bytes], limit: int) -> str:
    fh.seek(0)
    return fh.read(limit).decode("utf-8", errors="replace")


def run_tool(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    max_output: int = MAX_OUTPUT,
) -> ToolResult:
    """Run ``argv`` to completion within ``timeout`` seconds.

    Output goes to anonymous temporary files (a pipe could fill up and block
    a chatty tool), of which at most ``max_output`` bytes are read back.

    Args:
        argv: the command; the first element is looked up on ``PATH``.
        timeout: seconds before the process group is killed.
        env: extra environment variables on top of the agent's own.
        cwd: working directory.
        max_output: bytes of stdout and of stderr kept.

    Raises:
        DeviceStateError: the tool cannot be started or did not finish in time.
    """
    command = " ".join(argv)
    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=full_env,
                cwd=cwd,
                start_new_session=True,  # a timeout kills the tool's children too
            )
        except OSError as e:
            raise DeviceStateError(f"cannot run {command}: {e}") from e
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise DeviceStateError(f"{command} did not finish within {timeout:g}s") from e
        return ToolResult(
            tuple(argv), returncode, _read_bounded(out, max_output), _read_bounded(err, max_output)
        )


__all__ = ["MAX_OUTPUT", "ToolResult", "run_tool"]
