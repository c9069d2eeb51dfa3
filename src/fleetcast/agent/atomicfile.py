"""Crash-safe file replacement, the one way the agent changes state on disk.

Every piece of agent state (journal, device key, installed-artifact record,
simulated bootloader environment) is written the same way:

1. write the new content to a temporary file in the *same directory*
   (``os.replace`` is only atomic within one file system);
2. flush and ``fsync`` the temporary file, so its bytes are on disk;
3. ``os.replace`` it over the old file, so a reader sees either the old or
   the new content, never a mix;
4. ``fsync`` the directory, so the rename itself survives a power cut.

A power cut at any line leaves either the old file or the new one, plus at
worst a stray ``.tmp`` file that the next write replaces.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from fleetcast.exceptions import DeviceStateError


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry to disk (makes renames and creations durable).

    Raises:
        DeviceStateError: the directory cannot be opened or synced.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as e:
        raise DeviceStateError(f"cannot open directory {directory} to sync it: {e}") from e
    try:
        os.fsync(fd)
    except OSError as e:
        raise DeviceStateError(f"cannot sync directory {directory}: {e}") from e
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Args:
        path: the file to write; its directory must exist.
        data: the complete new content.
        mode: permission bits of the new file (``0o600`` for secrets). The
            temporary file is created with them, so a secret is never
            readable by others, not even for a moment.

    Raises:
        DeviceStateError: the file cannot be written (disk full, read-only, ...).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a leftover from an earlier power cut
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise DeviceStateError(f"cannot write {path}: {e}") from e
    fsync_directory(path.parent)


__all__ = ["fsync_directory", "write_atomic"]
