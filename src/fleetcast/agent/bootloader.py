"""The A/B switch: which slot boots, and the boot counter that guards a trial.

Every backend (simulated U-Boot here; U-Boot via ``fw_setenv`` and GRUB via
``grub-editenv`` in :mod:`fleetcast.agent.bootloaders`; RAUC's slot status in
:mod:`fleetcast.agent.installers.rauc`) implements the same :class:`Bootloader`
protocol, and the agent only ever talks to that protocol:

- ``arm_trial(slot)``: the next boot tries ``slot``, under a boot counter;
- after that boot the agent runs its health checks, then either ``commit()``
  (the running slot becomes the default) or ``rollback()`` (the next boot goes
  back to the committed slot);
- if the new slot never gets far enough to decide (kernel panic, hang, power
  cut in a loop), the bootloader itself gives up after ``bootlimit`` attempts
  and boots the committed slot again.

So the device always has a committed slot to boot, whatever happens.

:class:`SimulatedUBoot` keeps U-Boot's variables in a ``key=value`` file,
written atomically, with the semantics of U-Boot's ``bootcount`` feature as
used by Mender: ``boot_part`` (``a``/``b``), ``upgrade_available`` (0/1),
``bootcount`` and ``bootlimit``. :func:`simulate_boot` is what the boot ROM
and U-Boot do at power-on; it records the booted slot in a "kernel command
line" file next to the environment, which is what ``active_slot()`` reads on
the running system.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from fleetcast.agent.atomicfile import write_atomic
from fleetcast.agent.config import BootloaderConfig
from fleetcast.exceptions import DeviceStateError, UsageError

SLOTS: Final = ("a", "b")
BROKEN_IMAGE_MARKER: Final = b"FLEETCAST-BROKEN"
DEFAULT_BOOTLIMIT: Final = 3
# A device whose both slots fail to boot loops forever on real hardware; the
# simulation stops after this many power-on attempts and says so.
_MAX_POWER_ON_ATTEMPTS: Final = 16


def other_slot(slot: str) -> str:
    """Return the slot that is not ``slot``.

    Raises:
        UsageError: ``slot`` is not ``"a"`` or ``"b"``.
    """
    if slot not in SLOTS:
        raise UsageError(f"unknown slot {slot!r} (expected 'a' or 'b')")
    return "b" if slot == "a" else "a"


@runtime_checkable
class Bootloader(Protocol):
    """One interface for every A/B bootloader backend."""

    def active_slot(self) -> str:
        """The slot the running system was booted from."""
        ...

    def committed_slot(self) -> str:
        """The slot that boots by default (and after a failed or abandoned trial)."""
        ...

    def arm_trial(self, slot: str) -> None:
        """Make the next boot try ``slot`` once, under the boot counter."""
        ...

    def in_trial(self) -> bool:
        """Whether a trial is armed or running (not yet committed or rolled back)."""
        ...

    def commit(self) -> None:
        """Make the running (trial) slot the committed one."""
        ...

    def rollback(self) -> None:
        """Abandon the trial: the next boot goes to the committed slot."""
        ...


def _read_env(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DeviceStateError(f"cannot read bootloader environment {path}: {e}") from e
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise DeviceStateError(f"bootloader environment {path}:{number}: not key=value")
        env[key.strip()] = value.strip()
    return env


def _write_env(path: Path, env: dict[str, str]) -> None:
    write_atomic(path, "".join(f"{k}={v}\n" for k, v in env.items()).encode())


class _Env:
    """Typed view of the U-Boot variables the A/B scheme uses."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw = _read_env(path)
        try:
            self.boot_part = self.raw["boot_part"]
            self.upgrade_available = int(self.raw.get("upgrade_available", "0"))
            self.bootcount = int(self.raw.get("bootcount", "0"))
            self.bootlimit = int(self.raw.get("bootlimit", str(DEFAULT_BOOTLIMIT)))
        except (KeyError, ValueError) as e:
            raise DeviceStateError(f"bootloader environment {path} is invalid: {e}") from e
        if self.boot_part not in SLOTS or self.upgrade_available not in (0, 1):
            raise DeviceStateError(f"bootloader environment {path} is invalid: {self.raw}")

    def save(self) -> None:
        self.raw.update(
            boot_part=self.boot_part,
            upgrade_available=str(self.upgrade_available),
            bootcount=str(self.bootcount),
            bootlimit=str(self.bootlimit),
        )
        _write_env(self.path, self.raw)

    def slot_path(self, slot: str) -> Path:
        try:
            return Path(self.raw[f"slot_{slot}"])
        except KeyError as e:
            raise DeviceStateError(f"bootloader environment {self.path} has no slot_{slot}") from e


def cmdline_path(env_file: Path) -> Path:
    """Where the simulated boot writes the kernel command line of the running system."""
    return env_file.with_name(env_file.name + ".cmdline")


class SimulatedUBoot:
    """U-Boot's A/B + boot-counter semantics over an environment file.

    Args:
        env_file: the environment (``key=value`` lines), created by :meth:`create`.
    """

    def __init__(self, env_file: Path) -> None:
        self.env_file = env_file

    @classmethod
    def create(
        cls,
        env_file: Path,
        *,
        slot_a: Path,
        slot_b: Path,
        boot_part: str = "a",
        bootlimit: int = DEFAULT_BOOTLIMIT,
    ) -> SimulatedUBoot:
        """Write a fresh environment that boots ``boot_part`` (as at the factory).

        Raises:
            DeviceStateError: the environment cannot be written.
        """
        other_slot(boot_part)
        _write_env(
            env_file,
            {
                "boot_part": boot_part,
                "upgrade_available": "0",
                "bootcount": "0",
                "bootlimit": str(bootlimit),
                "slot_a": str(slot_a.resolve()),
                "slot_b": str(slot_b.resolve()),
            },
        )
        return cls(env_file)

    def environment(self) -> dict[str, str]:
        """The raw variables, for diagnostics and tests.

        Raises:
            DeviceStateError: the environment is unreadable.
        """
        return dict(_Env(self.env_file).raw)

    def active_slot(self) -> str:
        """Read the booted slot from the kernel command line.

        Raises:
            DeviceStateError: the system was not booted by :func:`simulate_boot`.
        """
        path = cmdline_path(self.env_file)
        try:
            words = path.read_text(encoding="utf-8").split()
        except OSError as e:
            raise DeviceStateError(f"cannot read kernel command line {path}: {e}") from e
        for word in words:
            if word.startswith("fleetcast.slot=") and word.split("=", 1)[1] in SLOTS:
                return word.split("=", 1)[1]
        raise DeviceStateError(f"kernel command line {path} names no fleetcast.slot")

    def committed_slot(self) -> str:
        """Raises: DeviceStateError: the environment is unreadable."""
        env = _Env(self.env_file)
        return other_slot(env.boot_part) if env.upgrade_available else env.boot_part

    def in_trial(self) -> bool:
        """Raises: DeviceStateError: the environment is unreadable."""
        return _Env(self.env_file).upgrade_available == 1

    def arm_trial(self, slot: str) -> None:
        """Set ``boot_part=slot upgrade_available=1 bootcount=0`` (idempotent).

        Raises:
            DeviceStateError: ``slot`` is the running slot, or the environment
                is unreadable.
        """
        other_slot(slot)
        if slot == self.active_slot():
            raise DeviceStateError(f"cannot arm a trial of slot {slot}: it is the running slot")
        env = _Env(self.env_file)
        env.boot_part, env.upgrade_available, env.bootcount = slot, 1, 0
        env.save()

    def commit(self) -> None:
        """Set ``upgrade_available=0 bootcount=0`` on the running trial (idempotent).

        Raises:
            DeviceStateError: the running slot is not the one ``boot_part``
                names (committing would make the wrong slot permanent).
        """
        env = _Env(self.env_file)
        active = self.active_slot()
        if env.boot_part != active:
            raise DeviceStateError(
                f"cannot commit: running slot {active} but the bootloader would boot "
                f"{env.boot_part}"
            )
        env.upgrade_available, env.bootcount = 0, 0
        env.save()

    def rollback(self) -> None:
        """Point ``boot_part`` back at the committed slot and end the trial (idempotent).

        Raises:
            DeviceStateError: the environment is unreadable.
        """
        env = _Env(self.env_file)
        if env.upgrade_available:
            env.boot_part = other_slot(env.boot_part)
        env.upgrade_available, env.bootcount = 0, 0
        env.save()


def _boots(image: Path) -> bool:
    # An empty slot has no kernel; a marked image simulates a kernel panic.
    try:
        with image.open("rb") as fh:
            head = fh.read(len(BROKEN_IMAGE_MARKER))
    except OSError:
        return False
    return bool(head) and not head.startswith(BROKEN_IMAGE_MARKER)


def simulate_boot(env_file: Path) -> str:
    """Power the simulated device on: what U-Boot does, until a kernel runs.

    Each attempt: if ``upgrade_available=1``, increment ``bootcount``; if it
    exceeds ``bootlimit``, run ``altbootcmd`` (switch ``boot_part`` to the
    other slot, clear ``upgrade_available`` and ``bootcount``). Then boot
    ``boot_part``; an image that does not boot (empty, or starting with
    ``BROKEN_IMAGE_MARKER``) panics, the watchdog resets, and the next attempt
    begins. The booted slot is written to the kernel command line file.

    Returns:
        The slot that booted.

    Raises:
        DeviceStateError: neither slot boots (a bricked device), or the
            environment is unreadable.
    """
    for _ in range(_MAX_POWER_ON_ATTEMPTS):
        env = _Env(env_file)
        if env.upgrade_available:
            env.bootcount += 1
            if env.bootcount > env.bootlimit:
                env.boot_part = other_slot(env.boot_part)
                env.upgrade_available, env.bootcount = 0, 0
            env.save()
        image = env.slot_path(env.boot_part)
        if _boots(image):
            write_atomic(
                cmdline_path(env_file),
                f"root={image} fleetcast.slot={env.boot_part} bootcount={env.bootcount}\n".encode(),
            )
            return env.boot_part
    raise DeviceStateError(f"device with environment {env_file} does not boot from any slot")


def make_bootloader(config: BootloaderConfig) -> Bootloader:
    """Build the backend named by ``bootloader.type``.

    Raises:
        UsageError: the type has no backend, or it lacks its settings.
    """
    # Imported here: the backends import this module for the protocol.
    from fleetcast.agent.bootloaders import Grub, UBoot
    from fleetcast.agent.installers.rauc import Rauc, RaucBootloader

    if config.type == "simulated":
        if config.env_file is None:
            raise UsageError("bootloader.env_file is required for the simulated bootloader")
        return SimulatedUBoot(config.env_file)
    if config.type == "uboot":
        return UBoot(config.fw_env_config, cmdline=config.cmdline, timeout=config.tool_timeout)
    if config.type == "grub":
        return Grub(config.grubenv, cmdline=config.cmdline, timeout=config.tool_timeout)
    if config.type == "rauc":
        if config.trial_file is None:
            raise UsageError("the RAUC bootloader needs a trial_file (set from state_dir)")
        return RaucBootloader(
            Rauc(config.rauc_conf, timeout=config.tool_timeout),
            bootnames=config.rauc_bootnames,
            trial_file=config.trial_file,
        )
    raise UsageError(f"bootloader type {config.type!r} is not implemented")


__all__ = [
    "BROKEN_IMAGE_MARKER",
    "SLOTS",
    "Bootloader",
    "SimulatedUBoot",
    "cmdline_path",
    "make_bootloader",
    "other_slot",
    "simulate_boot",
]
