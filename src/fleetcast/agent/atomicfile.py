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
worst a stray ``.tmp`` file that the next write replaces. Every step goes
through :mod:`fleetcast.agent.durable`, so the power-cut tests can cut after
each one of them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from fleetcast.agent import durable
from fleetcast.exceptions import DeviceStateError


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry to disk (makes renames and creations durable).

    Raises:
        DeviceStateError: the directory cannot be opened or synced.
    """
    try:
        durable.fsync_dir(directory)
    except OSError as e:
        raise DeviceStateError(f"cannot sync directory {directory}: {e}") from e


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
            durable.unlink(tmp)  # a leftover from an earlier power cut
        fd = durable.open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            durable.write_all(fd, data)
            durable.fsync(fd)
        finally:
            durable.close(fd)
        durable.replace(tmp, path)
    except OSError as e:
        raise DeviceStateError(f"cannot write {path}: {e}") from e
    fsync_directory(path.parent)


def write_new_file(
    path: Path, read: Callable[[int], bytes], *, mode: int, chunk: int = 64 * 1024
) -> None:
    """Create ``path``, fill it from ``read`` until it returns ``b""``, and fsync it.

    The file must not exist yet (``O_EXCL``; a symbolic link is not followed)
    and gets exactly ``mode``, whatever the umask. The caller syncs the
    directory once all its new files are written.

    Raises:
        OSError: from the system calls (``FileExistsError``: ``path`` exists);
            the caller knows what the file is and says so.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = durable.open_file(path, flags, 0o600)
    try:
        while data := read(chunk):
            durable.write_all(fd, data)
        os.fchmod(fd, mode)
        durable.fsync(fd)
    finally:
        durable.close(fd)


__all__ = ["fsync_directory", "write_atomic", "write_new_file"]
