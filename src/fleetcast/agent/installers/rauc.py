"""RAUC as the slot writer *and* the owner of the boot switch.

With ``installer.type = "rauc"`` a ``rootfs-image`` payload is a RAUC bundle
(``meta.format = "raucb"``). Fleetcast still verifies it against the signed
manifest (length, sha256) while it downloads it into the spool directory;
RAUC then verifies it a second time with its own keyring and writes the
inactive slot group. RAUC talks to the bootloader (U-Boot, GRUB, barebox,
EFI or a custom backend), so the agent's
:class:`~fleetcast.agent.bootloader.Bootloader` for RAUC is
:class:`RaucBootloader`, which maps the six methods onto ``rauc status``:

=================  ==========================================================
``active_slot``    ``booted`` of ``rauc status`` (its ``bootname``)
``arm_trial(s)``   record the trial in ``<state_dir>/rauc-trial.json``, then
                   ``rauc status mark-active <slot s>``
``in_trial``       a trial is recorded *and* RAUC's primary slot is that slot
                   (after the bootloader gave up on it, RAUC's primary is the
                   old slot again, so the trial is over)
``commit``         ``rauc status mark-good booted``, then forget the trial
``rollback``       ``mark-bad booted`` if the trial slot is running, then
                   ``mark-active`` the committed slot, then forget the trial
``committed_slot`` the slot before the trial, or RAUC's primary
=================  ==========================================================

Configure RAUC with ``activate-installed=false`` in ``system.conf``: then
``rauc install`` only writes, and arming stays a separate, journaled step of
the agent. If RAUC activated the new slot anyway, the agent marks the running
slot active again right after the install (and logs it), so that nothing is
armed before the agent's journal says ``installed``.

``rauc install`` asks the RAUC service over D-Bus (the system bus, or the
bus ``DBUS_SYSTEM_BUS_ADDRESS`` names), so ``rauc.service`` must run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fleetcast.agent.atomicfile import write_atomic
from fleetcast.agent.installers._check import require_image_format
from fleetcast.agent.tooling import ToolResult, run_tool
from fleetcast.core.manifest import Manifest
from fleetcast.exceptions import DeviceStateError, UsageError

BUNDLE_FORMAT: Final = "raucb"


@dataclass(frozen=True)
class RaucSlot:
    """One slot as ``rauc status`` lists it."""

    name: str
    slot_class: str
    bootname: str | None
    boot_status: str | None


@dataclass(frozen=True)
class RaucStatus:
    """The parts of ``rauc status --output-format=json`` the agent uses."""

    booted: str | None
    boot_primary: str | None
    slots: tuple[RaucSlot, ...]

    @classmethod
    def from_json(cls, text: str) -> RaucStatus:
        """Raises: DeviceStateError: not the JSON ``rauc status`` prints."""
        try:
            data: Any = json.loads(text)
            slots = []
            for entry in data["slots"]:
                for name, info in entry.items():
                    slots.append(
                        RaucSlot(name, info["class"], info.get("bootname"), info.get("boot_status"))
                    )
            return cls(data.get("booted"), data.get("boot_primary"), tuple(slots))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DeviceStateError(f"cannot understand `rauc status`: {e!r}") from e


class Rauc:
    """The ``rauc`` command line.

    Args:
        conf: RAUC's ``system.conf`` (``None``: RAUC's default).
        timeout: seconds a status or mark call may take.
    """

    def __init__(self, conf: Path | None, *, timeout: float = 30.0) -> None:
        self.conf = conf
        self.timeout = timeout

    def _argv(self, *args: str) -> list[str]:
        return ["rauc", *(["-c", str(self.conf)] if self.conf is not None else []), *args]

    def _run(self, *args: str, timeout: float | None = None) -> ToolResult:
        return run_tool(self._argv(*args), timeout=timeout or self.timeout)

    def status(self) -> RaucStatus:
        """Raises: DeviceStateError: ``rauc status`` failed."""
        result = self._run("status", "--output-format=json")
        if not result.ok:
            raise DeviceStateError(f"cannot read RAUC's status: {result.describe()}")
        return RaucStatus.from_json(result.stdout)

    def mark(self, state: str, slot: str) -> None:
        """``rauc status mark-<state> <slot>``.

        Raises:
            DeviceStateError: RAUC refused.
        """
        result = self._run("status", f"mark-{state}", slot)
        if not result.ok:
            raise DeviceStateError(f"RAUC could not mark {slot} {state}: {result.describe()}")

    def install(self, bundle: Path, *, timeout: float, args: tuple[str, ...] = ()) -> ToolResult:
        """``rauc install <bundle>``; the caller reads the result.

        Raises:
            DeviceStateError: ``rauc`` could not be run or timed out.
        """
        return self._run("install", *args, str(bundle), timeout=timeout)


def _other(slot: str) -> str:
    return "b" if slot == "a" else "a"


class RaucBootloader:
    """The agent's A/B protocol over RAUC's slot status (see the module docstring).

    Args:
        rauc: the command line.
        bootnames: the RAUC ``bootname`` of Fleetcast's slot ``a`` and slot ``b``.
        trial_file: where the armed trial is recorded.
    """

    def __init__(self, rauc: Rauc, *, bootnames: tuple[str, str], trial_file: Path) -> None:
        self.rauc = rauc
        self.bootnames = bootnames
        self.trial_file = trial_file

    def slot_of_bootname(self, bootname: str | None) -> str:
        if bootname == self.bootnames[0]:
            return "a"
        if bootname == self.bootnames[1]:
            return "b"
        raise DeviceStateError(
            f"RAUC slot with bootname {bootname!r} is neither {self.bootnames[0]!r} (a) "
            f"nor {self.bootnames[1]!r} (b): check bootloader.rauc_bootnames"
        )

    def rauc_slot(self, status: RaucStatus, slot: str) -> RaucSlot:
        bootname = self.bootnames[0 if slot == "a" else 1]
        for entry in status.slots:
            if entry.bootname == bootname:
                return entry
        raise DeviceStateError(f"RAUC has no slot with bootname {bootname!r}")

    def primary_of(self, status: RaucStatus) -> str | None:
        for entry in status.slots:
            if entry.name == status.boot_primary:
                return self.slot_of_bootname(entry.bootname)
        return None

    def _trial(self) -> str | None:
        try:
            data = json.loads(self.trial_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise DeviceStateError(f"trial record {self.trial_file} is unreadable: {e}") from e
        slot = data.get("slot") if isinstance(data, dict) else None
        if slot not in ("a", "b"):
            raise DeviceStateError(f"trial record {self.trial_file} names no slot")
        return str(slot)

    def _forget_trial(self) -> None:
        try:
            self.trial_file.unlink(missing_ok=True)
        except OSError as e:
            raise DeviceStateError(f"cannot remove trial record {self.trial_file}: {e}") from e

    def active_slot(self) -> str:
        """Raises: DeviceStateError: RAUC cannot tell, or the bootname is not mapped."""
        return self.slot_of_bootname(self.rauc.status().booted)

    def in_trial(self) -> bool:
        """Raises: DeviceStateError: RAUC's status or the trial record is unreadable."""
        trial = self._trial()
        return trial is not None and self.primary_of(self.rauc.status()) == trial

    def committed_slot(self) -> str:
        """Raises: DeviceStateError: RAUC's status or the trial record is unreadable."""
        status = self.rauc.status()
        trial = self._trial()
        primary = self.primary_of(status)
        if trial is not None and primary == trial:
            return _other(trial)
        return primary or self.slot_of_bootname(status.booted)

    def arm_trial(self, slot: str) -> None:
        """Record the trial, then ``mark-active`` the slot (idempotent).

        Raises:
            UsageError: ``slot`` is not ``a`` or ``b``.
            DeviceStateError: ``slot`` is running, or RAUC refused.
        """
        if slot not in ("a", "b"):
            raise UsageError(f"unknown slot {slot!r} (expected 'a' or 'b')")
        status = self.rauc.status()
        if self.slot_of_bootname(status.booted) == slot:
            raise DeviceStateError(f"cannot arm a trial of slot {slot}: it is the running slot")
        write_atomic(self.trial_file, json.dumps({"slot": slot}).encode())
        self.rauc.mark("active", self.rauc_slot(status, slot).name)

    def commit(self) -> None:
        """``mark-good booted``, then forget the trial (idempotent).

        Raises:
            DeviceStateError: the running slot is not RAUC's primary, or RAUC refused.
        """
        status = self.rauc.status()
        active = self.slot_of_bootname(status.booted)
        primary = self.primary_of(status)
        if primary is not None and primary != active:
            raise DeviceStateError(
                f"cannot commit: running slot {active} but RAUC would boot {primary}"
            )
        self.rauc.mark("good", "booted")
        self._forget_trial()

    def rollback(self) -> None:
        """End the trial: the committed slot becomes primary again (idempotent).

        Raises:
            DeviceStateError: RAUC refused.
        """
        status = self.rauc.status()
        active = self.slot_of_bootname(status.booted)
        trial = self._trial()
        committed = _other(trial) if trial is not None else active
        if trial is not None and active == trial:
            self.rauc.mark("bad", "booted")
        if self.primary_of(status) != committed or trial is not None:
            self.rauc.mark("active", self.rauc_slot(status, committed).name)
        self._forget_trial()


class RaucInstaller:
    """Hands a verified bundle to ``rauc install``.

    Args:
        rauc: the command line.
        bootloader: the RAUC boot switch (to undo an early activation).
        spool: where the bundle is downloaded.
        timeout: seconds ``rauc install`` may take.
        args: extra ``rauc install`` arguments.
    """

    def __init__(
        self,
        rauc: Rauc,
        bootloader: RaucBootloader,
        *,
        spool: Path,
        timeout: float,
        args: tuple[str, ...] = (),
    ) -> None:
        self.rauc = rauc
        self.bootloader = bootloader
        self.spool = spool
        self.timeout = timeout
        self.args = args

    def check(self, manifest: Manifest) -> None:
        """Raises: IncompatibleError: the image payload is not a RAUC bundle."""
        require_image_format(manifest, BUNDLE_FORMAT, "RAUC")

    def target(self, slot: str) -> Path:
        """The spool file the verified bundle is streamed into."""
        return self.spool / "update.raucb"

    def write(self, bundle: Path, slot: str, log: Callable[[str], None]) -> None:
        """``rauc install`` the bundle into the inactive slot (``slot``).

        Raises:
            DeviceStateError: RAUC failed or refused the bundle (the message
                and log tail say why), or it wrote the running slot's group.
        """
        status = self.rauc.status()
        active = self.bootloader.slot_of_bootname(status.booted)
        if active == slot:
            raise DeviceStateError(f"RAUC cannot install into the running slot {slot}")
        result = self.rauc.install(bundle, timeout=self.timeout, args=self.args)
        for line in result.tail():
            log(line)
        if not result.ok:
            raise DeviceStateError(f"RAUC refused the bundle: {result.describe()}")
        after = self.rauc.status()
        if self.bootloader.primary_of(after) == slot:
            log("RAUC activated the new slot itself (set activate-installed=false); undoing")
            self.rauc.mark("active", self.bootloader.rauc_slot(after, active).name)
        log(f"RAUC installed the bundle into slot {slot}")

    def cleanup(self) -> None:
        """Remove the spooled bundle.

        Raises:
            DeviceStateError: it cannot be removed.
        """
        try:
            self.target("a").unlink(missing_ok=True)
        except OSError as e:
            raise DeviceStateError(f"cannot remove the spooled bundle: {e}") from e


__all__ = ["BUNDLE_FORMAT", "Rauc", "RaucBootloader", "RaucInstaller", "RaucSlot", "RaucStatus"]
