"""Real-tool test helpers: a board whose boot switch lives in a real U-Boot or GRUB environment.

A :class:`Board` is a :class:`~fleetcast.agent.SimulatedDevice` (slots, state,
keys, configuration) whose bootloader is a *real* backend. Its
:meth:`Board.power_cycle` plays the firmware:

- U-Boot (:func:`uboot_power_on`): U-Boot cannot run on this machine, so its
  ``CONFIG_BOOTCOUNT_ENV`` logic and the ``altbootcmd``/``fleetcast_select``
  commands of ``packaging/uboot/fleetcast-ab.env`` are replayed in Python,
  reading and saving the environment with the real ``fw_printenv``/``fw_setenv``;
- GRUB (:func:`grub_power_on`): the real GRUB, ``grub-emu``, runs
  ``packaging/grub/fleetcast-ab.cfg`` against the ``grubenv`` on an ext2 disk
  image (``save_env`` cannot write a host file), and the block is copied back.

A slot whose image is empty or starts with ``BROKEN_IMAGE_MARKER`` "panics":
the next power-on attempt begins, as a hardware watchdog would make it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from fleetcast.agent import AgentConfig, SimulatedDevice
from fleetcast.agent.bootloader import BROKEN_IMAGE_MARKER
from fleetcast.agent.bootloaders import UBootEnv
from fleetcast.agent.config import BootloaderConfig
from fleetcast.agent.slots import InstalledArtifacts

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"


def require_tools(*tools: str) -> None:
    """Skip (or, with ``FLEETCAST_REQUIRE_SERVICES=1``, fail) when a tool is missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    message = (
        f"needs {', '.join(missing)} (Debian: see docs/agent.md, 'Testing with the real tools')"
    )
    if os.environ.get("FLEETCAST_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _boots(image: Path) -> bool:
    try:
        head = image.read_bytes()[: len(BROKEN_IMAGE_MARKER)]
    except OSError:
        return False
    return bool(head) and not head.startswith(BROKEN_IMAGE_MARKER)


class Board:
    """A simulated device whose boot switch is a real bootloader environment."""

    def __init__(self, device: SimulatedDevice, config: AgentConfig) -> None:
        self.device = device
        self.config = config
        self.cmdline = config.bootloader.cmdline

    def slot_path(self, slot: str) -> Path:
        return self.config.slots.path(slot)

    def slot_bytes(self, slot: str) -> bytes:
        return self.slot_path(slot).read_bytes()

    def booted_slot(self) -> str:
        match = re.search(r"fleetcast\.slot=([ab])", self.cmdline.read_text())
        assert match is not None
        return match.group(1)

    def installed(self) -> tuple[str | None, str | None]:
        content = InstalledArtifacts(self.config.state_dir).get(self.booted_slot())
        return (content.name, content.version) if content else (None, None)

    def power_cycle(self) -> str:
        raise NotImplementedError


class UBootBoard(Board):
    """A board with U-Boot; the environment is a file (or two, redundant)."""

    def __init__(self, device: SimulatedDevice, *, redundant: bool = False) -> None:
        root = device.root
        copies = [root / "uboot-env.0", root / "uboot-env.1"][: 2 if redundant else 1]
        for copy in copies:
            copy.write_bytes(b"\0" * 0x4000)
        fw_config = root / "fw_env.config"
        fw_config.write_text("".join(f"{c} 0x0 0x4000\n" for c in copies))
        defaults = root / "defaults.env"
        defaults.write_text("boot_part=a\nupgrade_available=0\nbootcount=0\nbootlimit=3\n")
        # Provisioning, as at the factory: the only write that may start from defaults.
        UBootEnv(fw_config, defaults=defaults).write({"boot_part": "a"})
        config = replace(
            device.config,
            bootloader=BootloaderConfig(
                type="uboot", fw_env_config=fw_config, cmdline=root / "cmdline"
            ),
        )
        super().__init__(device, config)
        self.env = UBootEnv(fw_config)
        self.copies = copies
        self.power_cycle()

    def power_cycle(self) -> str:
        return uboot_power_on(self.env, self.config, self.cmdline)


def uboot_power_on(env: UBootEnv, config: AgentConfig, cmdline: Path) -> str:
    """What U-Boot does at power-on with ``packaging/uboot/fleetcast-ab.env``, until a kernel
    runs."""
    for _ in range(16):
        values = env.read()
        count = int(values.get("bootcount", "0"))
        if values.get("upgrade_available") == "1":
            count += 1  # CONFIG_BOOTCOUNT_ENV: counted and saved before bootcmd
            save = {"bootcount": str(count)}
            if count > int(values["bootlimit"]):  # altbootcmd
                save = {
                    "boot_part": "a" if values["boot_part"] == "b" else "b",
                    "upgrade_available": "0",
                    "bootcount": "0",
                }
            env.write(save)
            values = env.read()
        slot = "b" if values["boot_part"] == "b" else "a"  # fleetcast_select
        if _boots(config.slots.path(slot)):
            cmdline.write_text(f"root=/dev/slot-{slot} fleetcast.slot={slot} bootcount={count}\n")
            return slot
    raise AssertionError("the board boots from no slot")


class GrubBoard(Board):
    """A board with GRUB; ``grubenv`` is a file the agent edits with ``grub-editenv``."""

    def __init__(self, device: SimulatedDevice) -> None:
        root = device.root
        grubenv = root / "grubenv"
        subprocess.run(["grub-editenv", str(grubenv), "create"], check=True)
        subprocess.run(
            [
                *("grub-editenv", str(grubenv), "set", "boot_part=a"),
                *("upgrade_available=0", "bootcount=0", "bootlimit=3"),
            ],
            check=True,
        )
        config = replace(
            device.config,
            bootloader=BootloaderConfig(type="grub", grubenv=grubenv, cmdline=root / "cmdline"),
        )
        super().__init__(device, config)
        self.grubenv = grubenv
        self.work = root / "grub-emu"
        self.power_cycle()

    def power_cycle(self) -> str:
        for _ in range(16):
            args = grub_power_on(self.grubenv, self.work)
            slot = re.search(r"fleetcast\.slot=([ab])", args)
            assert slot is not None, args
            if _boots(self.config.slots.path(slot.group(1))):
                self.cmdline.write_text(f"root=/dev/slot-{slot.group(1)} {args}\n")
                return slot.group(1)
        raise AssertionError("the board boots from no slot")


def grub_power_on(grubenv: Path, work: Path) -> str:
    """Run the real GRUB (``grub-emu``) over the shipped snippet; return ``${fleetcast_args}``.

    ``grubenv`` is copied onto an ext2 image for GRUB and copied back after.
    """
    shutil.rmtree(work, ignore_errors=True)
    (work / "fs").mkdir(parents=True)
    (work / "grub").mkdir()
    shutil.copyfile(grubenv, work / "fs" / "grubenv")
    disk = work / "disk.img"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext2", "-d", str(work / "fs"), str(disk), "1M"],
        check=True,
        capture_output=True,
    )
    (work / "device.map").write_text(f"(hd0) {disk}\n")
    snippet = PACKAGING / "grub" / "fleetcast-ab.cfg"
    (work / "grub" / "grub.cfg").write_text(
        "set fleetcast_env=(hd0)/grubenv\n"
        f"source (host){snippet}\n"
        'echo "FLEETCAST-BOOT ${fleetcast_args} END"\n'
        "reboot\n"
    )
    out = subprocess.run(
        ["grub-emu", "-d", str(work / "grub"), "-m", str(work / "device.map")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    text = out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
    match = re.search(r"FLEETCAST-BOOT (.*?) END", text)
    assert match is not None, f"grub-emu did not run the snippet: {text[-2000:]}"
    assert "error:" not in text, text[-2000:]
    back = work / "grubenv.back"
    subprocess.run(
        ["debugfs", "-R", f"dump /grubenv {back}", str(disk)], check=True, capture_output=True
    )
    shutil.copyfile(back, grubenv)
    return match.group(1)


__all__ = [
    "PACKAGING",
    "REPO",
    "Board",
    "GrubBoard",
    "UBootBoard",
    "grub_power_on",
    "require_tools",
    "uboot_power_on",
]
