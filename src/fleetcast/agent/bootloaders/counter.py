"""The A/B + boot-counter scheme over a real bootloader's environment.

U-Boot and GRUB keep the same four variables (ADR 0003), and the agent
treats them the same way; only how the environment is read and written
differs (:class:`EnvStore`):

==================  ==========================================================
``boot_part``       ``a`` or ``b``: the slot the next boot starts
``upgrade_available``  ``1`` while a trial is armed or running, else ``0``
``bootcount``       boots attempted in this trial; the *bootloader* increments it
``bootlimit``       attempts before the bootloader gives up on the trial
==================  ==========================================================

The bootloader side (``packaging/uboot``, ``packaging/grub``): at power-on,
while ``upgrade_available=1`` it increments ``bootcount``; once ``bootcount >
bootlimit`` it switches ``boot_part`` back, clears ``upgrade_available`` and
``bootcount`` (U-Boot's ``altbootcmd``) and boots the committed slot. It puts
``fleetcast.slot=<boot_part>`` on the kernel command line, which is how the
agent learns the running slot.

The agent side (:class:`CounterBootloader`): ``arm_trial`` sets
``boot_part=<new> upgrade_available=1 bootcount=0`` in *one* environment
write; ``commit`` clears ``upgrade_available`` and ``bootcount``; ``rollback``
points ``boot_part`` back at the committed slot. Every write is read back and
compared, so a tool that silently ignored a line cannot leave a half-armed
trial unnoticed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final, Protocol

from fleetcast.exceptions import DeviceStateError, UsageError

SLOTS: Final = ("a", "b")
DEFAULT_BOOTLIMIT: Final = 3
_NAME = re.compile(r"^[A-Za-z0-9_.]+$")


class EnvStore(Protocol):
    """A bootloader environment: read all variables, set several in one write."""

    def read(self) -> dict[str, str]:
        """Every variable of the environment.

        Raises:
            DeviceStateError: the environment cannot be read.
        """
        ...

    def write(self, values: dict[str, str]) -> None:
        """Set ``values`` in one write of the environment.

        Raises:
            DeviceStateError: the write failed or did not stick.
        """
        ...


def check_assignments(values: dict[str, str]) -> None:
    """Refuse names and values a ``name=value`` line cannot carry.

    Raises:
        UsageError: a name with odd characters, or a value with a newline.
    """
    for key, value in values.items():
        if not _NAME.match(key) or "\n" in value or "\x00" in value:
            raise UsageError(f"cannot store {key!r}={value!r} in a bootloader environment")


def parse_assignments(text: str) -> dict[str, str]:
    """Parse ``name=value`` lines (as ``fw_printenv`` and ``grub-editenv list`` print them)."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value
    return env


def slot_from_cmdline(path: Path) -> str:
    """The slot named by ``fleetcast.slot=`` on the kernel command line.

    Raises:
        DeviceStateError: the file is unreadable or names no slot (the boot
            snippet is not installed).
    """
    try:
        words = path.read_text(encoding="utf-8").split()
    except OSError as e:
        raise DeviceStateError(f"cannot read kernel command line {path}: {e}") from e
    for word in reversed(words):  # the last one wins, as for the kernel
        key, _, value = word.partition("=")
        if key == "fleetcast.slot" and value in SLOTS:
            return value
    raise DeviceStateError(
        f"kernel command line {path} has no fleetcast.slot=a|b: is the boot snippet installed?"
    )


def _other(slot: str) -> str:
    return "b" if slot == "a" else "a"


class _State:
    def __init__(self, env: dict[str, str], where: str) -> None:
        try:
            self.boot_part = env["boot_part"]
            self.upgrade_available = int(env.get("upgrade_available", "0") or "0")
            self.bootcount = int(env.get("bootcount", "0") or "0")
        except (KeyError, ValueError) as e:
            raise DeviceStateError(f"bootloader environment {where} is invalid: {e!r}") from e
        if self.boot_part not in SLOTS or self.upgrade_available not in (0, 1):
            raise DeviceStateError(
                f"bootloader environment {where} is invalid: boot_part={self.boot_part!r} "
                f"upgrade_available={self.upgrade_available!r}"
            )


class CounterBootloader:
    """:class:`~fleetcast.agent.bootloader.Bootloader` over an :class:`EnvStore`.

    Args:
        store: the environment (U-Boot's or GRUB's).
        cmdline: the kernel command line of the running system.
        where: how to name the environment in errors.
    """

    def __init__(self, store: EnvStore, *, cmdline: Path, where: str) -> None:
        self.store = store
        self.cmdline = cmdline
        self.where = where

    def _state(self) -> _State:
        return _State(self.store.read(), self.where)

    def _set(self, values: dict[str, str]) -> None:
        self.store.write(values)

    def environment(self) -> dict[str, str]:
        """The raw variables, for diagnostics and tests.

        Raises:
            DeviceStateError: the environment is unreadable.
        """
        return self.store.read()

    def active_slot(self) -> str:
        """Raises: DeviceStateError: the kernel command line names no slot."""
        return slot_from_cmdline(self.cmdline)

    def committed_slot(self) -> str:
        """Raises: DeviceStateError: the environment is unreadable or invalid."""
        state = self._state()
        return _other(state.boot_part) if state.upgrade_available else state.boot_part

    def in_trial(self) -> bool:
        """Raises: DeviceStateError: the environment is unreadable or invalid."""
        return self._state().upgrade_available == 1

    def arm_trial(self, slot: str) -> None:
        """Set ``boot_part=slot upgrade_available=1 bootcount=0`` in one write (idempotent).

        Raises:
            UsageError: ``slot`` is not ``a`` or ``b``.
            DeviceStateError: ``slot`` is the running slot, or the environment
                cannot be read or written.
        """
        if slot not in SLOTS:
            raise UsageError(f"unknown slot {slot!r} (expected 'a' or 'b')")
        if slot == self.active_slot():
            raise DeviceStateError(f"cannot arm a trial of slot {slot}: it is the running slot")
        self._state()  # refuse to arm over an environment we cannot make sense of
        self._set({"boot_part": slot, "upgrade_available": "1", "bootcount": "0"})

    def commit(self) -> None:
        """Clear ``upgrade_available`` and ``bootcount`` on the running trial (idempotent).

        Raises:
            DeviceStateError: the running slot is not the one ``boot_part`` names
                (committing would make the wrong slot permanent), or the
                environment cannot be read or written.
        """
        state = self._state()
        active = self.active_slot()
        if state.boot_part != active:
            raise DeviceStateError(
                f"cannot commit: running slot {active} but the bootloader would boot "
                f"{state.boot_part}"
            )
        if state.upgrade_available or state.bootcount:
            self._set({"upgrade_available": "0", "bootcount": "0"})

    def rollback(self) -> None:
        """Point ``boot_part`` back at the committed slot and end the trial (idempotent).

        Raises:
            DeviceStateError: the environment cannot be read or written.
        """
        state = self._state()
        if state.upgrade_available:
            self._set(
                {"boot_part": _other(state.boot_part), "upgrade_available": "0", "bootcount": "0"}
            )
        elif state.bootcount:
            self._set({"bootcount": "0"})

    def provision(self, *, boot_part: str = "a", bootlimit: int = DEFAULT_BOOTLIMIT) -> None:
        """Write the factory state: boot ``boot_part``, no trial, ``bootlimit`` attempts.

        Raises:
            UsageError: a bad slot or limit.
            DeviceStateError: the environment cannot be written.
        """
        if boot_part not in SLOTS or bootlimit < 1:
            raise UsageError(f"cannot provision boot_part={boot_part!r} bootlimit={bootlimit}")
        self._set(
            {
                "boot_part": boot_part,
                "upgrade_available": "0",
                "bootcount": "0",
                "bootlimit": str(bootlimit),
            }
        )


__all__ = [
    "DEFAULT_BOOTLIMIT",
    "CounterBootloader",
    "EnvStore",
    "check_assignments",
    "parse_assignments",
    "slot_from_cmdline",
]
