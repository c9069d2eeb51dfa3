"""U-Boot through the real ``fw_printenv`` / ``fw_setenv`` (libubootenv).

The environment lives where ``fw_env.config`` says: a raw partition, an
offset on the boot medium, an MTD or UBI volume, or a plain file. With two
lines in ``fw_env.config`` the environment is *redundant*: libubootenv
writes the older copy with a higher flag, so a power cut during a write
leaves the other, complete copy in force. The agent writes every change as
one ``fw_setenv -s <script>`` call, so each change is one environment write.

The variables and U-Boot's side of the scheme are described in
:mod:`fleetcast.agent.bootloaders.counter`; the environment text and boot
commands a board needs ship in ``packaging/uboot/``. U-Boot needs
``CONFIG_BOOTCOUNT_LIMIT`` and ``CONFIG_BOOTCOUNT_ENV`` for ``bootcount``,
``bootlimit`` and ``altbootcmd``.

``fw_setenv`` from libubootenv 0.3 ignores script lines it cannot parse
without an error, and ``fw_printenv NAME`` prints ``NAME=`` with exit 0 for
an unset variable; hence every write is verified by reading the whole
environment back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fleetcast.agent.bootloaders.counter import (
    CounterBootloader,
    check_assignments,
    parse_assignments,
)
from fleetcast.agent.tooling import run_tool
from fleetcast.exceptions import DeviceStateError


class UBootEnv:
    """The U-Boot environment as ``fw_printenv`` / ``fw_setenv`` see it.

    Args:
        config: the ``fw_env.config`` (``None``: the tools' default).
        timeout: seconds one tool call may take.
        defaults: a default environment file (``name=value`` lines) for
            :meth:`write` to start from when no valid copy exists yet; only
            for provisioning. Without it a missing or corrupt environment is
            an error, never silently replaced.
    """

    def __init__(
        self, config: Path | None, *, timeout: float = 30.0, defaults: Path | None = None
    ) -> None:
        self.config = config
        self.timeout = timeout
        self.defaults = defaults

    def _argv(self, tool: str) -> list[str]:
        argv = [tool]
        if self.config is not None:
            argv += ["-c", str(self.config)]
        if self.defaults is not None:
            argv += ["-f", str(self.defaults)]
        return argv

    @property
    def where(self) -> str:
        return f"U-Boot environment ({self.config or '/etc/fw_env.config'})"

    def read(self) -> dict[str, str]:
        """Every variable, from ``fw_printenv``.

        Raises:
            DeviceStateError: ``fw_printenv`` failed (no valid copy, bad config).
        """
        result = run_tool(self._argv("fw_printenv"), timeout=self.timeout)
        if not result.ok:
            raise DeviceStateError(f"cannot read the {self.where}: {result.describe()}")
        return parse_assignments(result.stdout)

    def write(self, values: dict[str, str]) -> None:
        """Set ``values`` with one ``fw_setenv -s`` call and verify them.

        Raises:
            UsageError: a name or value that cannot be stored.
            DeviceStateError: ``fw_setenv`` failed, or the values read back differ.
        """
        check_assignments(values)
        with tempfile.TemporaryDirectory(prefix="fleetcast-fw-") as tmp:
            script = Path(tmp) / "script"
            script.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
            result = run_tool([*self._argv("fw_setenv"), "-s", str(script)], timeout=self.timeout)
        if not result.ok:
            raise DeviceStateError(f"cannot write the {self.where}: {result.describe()}")
        written = self.read()
        wrong = {k: written.get(k) for k, v in values.items() if written.get(k) != v}
        if wrong:
            raise DeviceStateError(f"{self.where}: fw_setenv did not store {wrong}")


class UBoot(CounterBootloader):
    """The A/B scheme in a real U-Boot environment.

    Args:
        fw_env_config: the ``fw_env.config`` (``None``: ``/etc/fw_env.config``).
        cmdline: the kernel command line (``/proc/cmdline``).
        timeout: seconds one ``fw_printenv``/``fw_setenv`` call may take.
    """

    def __init__(
        self,
        fw_env_config: Path | None,
        *,
        cmdline: Path = Path("/proc/cmdline"),
        timeout: float = 30.0,
    ) -> None:
        self.env = UBootEnv(fw_env_config, timeout=timeout)
        super().__init__(self.env, cmdline=cmdline, where=self.env.where)


__all__ = ["UBoot", "UBootEnv"]
