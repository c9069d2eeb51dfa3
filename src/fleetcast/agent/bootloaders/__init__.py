"""Real bootloader backends of the :class:`~fleetcast.agent.bootloader.Bootloader` protocol.

- :class:`UBoot`: U-Boot's environment through ``fw_printenv``/``fw_setenv``;
- :class:`Grub`: a ``grubenv`` through ``grub-editenv``;
- RAUC's slot status: :class:`fleetcast.agent.installers.rauc.RaucBootloader`.

U-Boot and GRUB share the boot-counter scheme of
:mod:`fleetcast.agent.bootloaders.counter`; the bootloader-side snippets are
in ``packaging/uboot`` and ``packaging/grub``.
"""

from __future__ import annotations

from fleetcast.agent.bootloaders.counter import CounterBootloader, EnvStore, slot_from_cmdline
from fleetcast.agent.bootloaders.grub import Grub, GrubEnv
from fleetcast.agent.bootloaders.uboot import UBoot, UBootEnv

__all__ = [
    "CounterBootloader",
    "EnvStore",
    "Grub",
    "GrubEnv",
    "UBoot",
    "UBootEnv",
    "slot_from_cmdline",
]
