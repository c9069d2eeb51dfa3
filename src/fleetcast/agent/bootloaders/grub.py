"""GRUB through the real ``grub-editenv`` on a ``grubenv`` file.

GRUB's environment block is a 1 KiB file that ``grub.cfg`` reads with
``load_env`` and updates with ``save_env`` (which rewrites the file's
sectors in place, so the file must sit on a file system GRUB can write:
ext2/3/4, FAT, not LVM, RAID or btrfs). ``packaging/grub/fleetcast-ab.cfg``
implements the boot counter on the GRUB side; see
:mod:`fleetcast.agent.bootloaders.counter` for the variables.

``grub-editenv`` rewrites the file in place. The agent instead edits a copy
next to it and renames the copy over the original (``fsync`` before and
after), so a power cut leaves either the old or the new block, never half
of each. GRUB finds the file by name at every boot, so the new inode is
what it reads and writes next time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from fleetcast.agent import durable
from fleetcast.agent.atomicfile import fsync_directory
from fleetcast.agent.bootloaders.counter import (
    CounterBootloader,
    check_assignments,
    parse_assignments,
)
from fleetcast.agent.tooling import run_tool
from fleetcast.exceptions import DeviceStateError


class GrubEnv:
    """A ``grubenv`` file as ``grub-editenv`` sees it.

    Args:
        path: the environment block.
        timeout: seconds one ``grub-editenv`` call may take.
    """

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout

    @property
    def where(self) -> str:
        return f"GRUB environment {self.path}"

    def read(self) -> dict[str, str]:
        """Every variable, from ``grub-editenv list``.

        Raises:
            DeviceStateError: the file is missing or not an environment block.
        """
        if not self.path.is_file():
            raise DeviceStateError(f"{self.where} does not exist")
        result = run_tool(["grub-editenv", str(self.path), "list"], timeout=self.timeout)
        if not result.ok:
            raise DeviceStateError(f"cannot read the {self.where}: {result.describe()}")
        return parse_assignments(result.stdout)

    def create(self) -> None:
        """Create an empty environment block (provisioning).

        Raises:
            DeviceStateError: ``grub-editenv create`` failed.
        """
        result = run_tool(["grub-editenv", str(self.path), "create"], timeout=self.timeout)
        if not result.ok:
            raise DeviceStateError(f"cannot create the {self.where}: {result.describe()}")

    def write(self, values: dict[str, str]) -> None:
        """Set ``values`` in a copy with one ``grub-editenv set``, then swap it in.

        Raises:
            UsageError: a name or value that cannot be stored.
            DeviceStateError: the copy, the tool or the rename failed, or the
                values read back differ.
        """
        check_assignments(values)
        tmp = self.path.with_name(f".{self.path.name}.fleetcast-tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            shutil.copyfile(self.path, tmp)
        except OSError as e:
            raise DeviceStateError(f"cannot copy the {self.where}: {e}") from e
        assignments = [f"{k}={v}" for k, v in values.items()]
        result = run_tool(["grub-editenv", str(tmp), "set", *assignments], timeout=self.timeout)
        if not result.ok:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise DeviceStateError(f"cannot write the {self.where}: {result.describe()}")
        try:
            fd = durable.open_file(tmp, os.O_RDONLY)
            try:
                durable.fsync(fd)
            finally:
                durable.close(fd)
            durable.replace(tmp, self.path)
        except OSError as e:
            raise DeviceStateError(f"cannot replace the {self.where}: {e}") from e
        fsync_directory(self.path.parent)
        written = self.read()
        wrong = {k: written.get(k) for k, v in values.items() if written.get(k) != v}
        if wrong:
            raise DeviceStateError(f"{self.where}: grub-editenv did not store {wrong}")


class Grub(CounterBootloader):
    """The A/B scheme in a GRUB environment block.

    Args:
        grubenv: the environment block ``grub.cfg`` loads.
        cmdline: the kernel command line (``/proc/cmdline``).
        timeout: seconds one ``grub-editenv`` call may take.
    """

    def __init__(
        self, grubenv: Path, *, cmdline: Path = Path("/proc/cmdline"), timeout: float = 30.0
    ) -> None:
        self.env = GrubEnv(grubenv, timeout=timeout)
        super().__init__(self.env, cmdline=cmdline, where=self.env.where)


__all__ = ["Grub", "GrubEnv"]
