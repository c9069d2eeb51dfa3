"""Who writes a verified ``rootfs-image`` into the inactive slot.

The agent always downloads and verifies the payload itself (bounded,
resumable, checked against the signed manifest). What happens to the
verified bytes is the job of a :class:`SlotInstaller`:

- :class:`BuiltinWriter` (``installer.type = "fleetcast"``): the payload is
  the raw slot image and is streamed straight into the slot; nothing is left
  to do afterwards.
- :class:`~fleetcast.agent.installers.rauc.RaucInstaller` (``"rauc"``): the
  payload is a RAUC bundle, spooled to a file and handed to ``rauc install``.
- :class:`~fleetcast.agent.installers.swupdate.SwupdateInstaller`
  (``"swupdate"``): the payload is a ``.swu``, handed to ``swupdate -i``.

The runner calls :meth:`SlotInstaller.check` with the offer (before
downloading), streams the payload into :meth:`SlotInstaller.target`, calls
:meth:`SlotInstaller.write` once it is verified, journals ``installed`` and
then calls :meth:`SlotInstaller.cleanup`. A crash before ``installed`` is
journaled repeats the download (resuming in the spool file) and the write;
both tools are fine with writing the inactive slot again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from fleetcast.agent.bootloader import Bootloader
from fleetcast.agent.config import AgentConfig
from fleetcast.agent.installers.rauc import Rauc, RaucBootloader, RaucInstaller
from fleetcast.agent.installers.swupdate import SwupdateInstaller
from fleetcast.core.manifest import Manifest
from fleetcast.exceptions import IncompatibleError, UsageError

RAW_FORMATS: Final = ("", "raw")


class SlotInstaller(Protocol):
    """Turns a verified ``rootfs-image`` payload into a written inactive slot."""

    def check(self, manifest: Manifest) -> None:
        """Refuse an artifact this installer cannot handle, before any download.

        Raises:
            IncompatibleError: the payload's ``meta.format`` does not fit.
        """
        ...

    def target(self, slot: str) -> Path:
        """Where the verified payload is streamed (the slot, or a spool file)."""
        ...

    def write(self, payload: Path, slot: str, log: Callable[[str], None]) -> None:
        """Install the verified payload into ``slot``.

        Raises:
            DeviceStateError: the tool failed or refused the payload.
        """
        ...

    def cleanup(self) -> None:
        """Drop what :meth:`write` no longer needs (the spool file).

        Raises:
            DeviceStateError: it cannot be removed.
        """
        ...


class BuiltinWriter:
    """The agent writes the raw image into the slot itself (the default)."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config

    def check(self, manifest: Manifest) -> None:
        """Raises: IncompatibleError: the image is a RAUC bundle or a ``.swu``."""
        for payload in manifest.payloads:
            fmt = payload.meta.get("format", "")
            if payload.type == "rootfs-image" and fmt not in RAW_FORMATS:
                raise IncompatibleError(
                    f"payload {payload.name!r} has format {fmt!r}; this device writes raw "
                    "images (installer.type = 'fleetcast')"
                )

    def target(self, slot: str) -> Path:
        return self.config.slots.path(slot)

    def write(self, payload: Path, slot: str, log: Callable[[str], None]) -> None:
        """Nothing to do: the payload was streamed into the slot."""

    def cleanup(self) -> None:
        """Nothing to do."""


def make_slot_installer(config: AgentConfig, bootloader: Bootloader) -> SlotInstaller:
    """Build the installer ``installer.type`` names.

    Raises:
        UsageError: RAUC without the RAUC bootloader backend.
    """
    inst = config.installer
    spool = inst.spool_dir or config.state_dir
    if inst.type == "rauc":
        if not isinstance(bootloader, RaucBootloader):
            raise UsageError("installer.type 'rauc' needs bootloader.type 'rauc'")
        return RaucInstaller(
            bootloader.rauc, bootloader, spool=spool, timeout=inst.timeout, args=inst.args
        )
    if inst.type == "swupdate":
        return SwupdateInstaller(
            select=inst.swupdate_select, spool=spool, timeout=inst.timeout, args=inst.args
        )
    return BuiltinWriter(config)


__all__ = [
    "BuiltinWriter",
    "Rauc",
    "RaucBootloader",
    "RaucInstaller",
    "SlotInstaller",
    "SwupdateInstaller",
    "make_slot_installer",
]
