"""The agent's durable I/O: the few primitives through which it changes its flash.

Everything the agent writes that must survive a power cut (journal, slot
record, device key, bootloader environment, slot images, in-place payload
staging and switches) goes through these functions and nothing else:

- :func:`open_file`, :func:`write_all`, :func:`truncate`, :func:`close`:
  file content, which sits in the page cache until...
- :func:`fsync`: ...the file's content is on the medium;
- :func:`replace`, :func:`unlink`: directory entries, which are durable
  only after...
- :func:`fsync_dir`: ...the directory holding them is synced.

Errors are the ``OSError`` of the system call; callers translate them into
:class:`~fleetcast.exceptions.DeviceStateError` with their own context.

In production these are the ``os`` calls (:class:`OsIO`). They go through
one :class:`DurableIO` object so that a test can :func:`use` another one: a
recorder that counts the operations, cuts the power after the Nth and then
throws away what a real page cache would have lost (the power-cut tests in
``tests/agent/test_power_cut_every_write.py``). The backend is process-wide,
not per thread: swapping it is for tests that run one agent at a time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class DurableIO(Protocol):
    """The primitives of durable state changes (see the module docstring)."""

    def open(self, path: Path, flags: int, mode: int) -> int:
        """``os.open``: a file descriptor, possibly creating the file."""
        ...

    def write(self, fd: int, data: bytes | memoryview) -> int:
        """``os.write``: how many bytes were written (into the page cache)."""
        ...

    def fsync(self, fd: int) -> None:
        """``os.fsync``: the file's content and size are on the medium."""
        ...

    def truncate(self, fd: int, size: int) -> None:
        """``os.ftruncate``."""
        ...

    def close(self, fd: int) -> None:
        """``os.close`` (not a durability point)."""
        ...

    def replace(self, src: Path, dst: Path) -> None:
        """``os.replace``: atomic, durable once ``fsync_dir(dst.parent)`` returns."""
        ...

    def unlink(self, path: Path) -> None:
        """``os.unlink``: durable once ``fsync_dir(path.parent)`` returns."""
        ...

    def fsync_dir(self, directory: Path) -> None:
        """Sync a directory: the entries created, renamed or removed in it are durable."""
        ...


class OsIO:
    """The production :class:`DurableIO`: the system calls themselves."""

    def open(self, path: Path, flags: int, mode: int) -> int:
        return os.open(path, flags, mode)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def unlink(self, path: Path) -> None:
        path.unlink()

    def fsync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_io: DurableIO = OsIO()


@contextlib.contextmanager
def use(io: DurableIO) -> Iterator[DurableIO]:
    """Route the agent's durable I/O through ``io`` inside the ``with`` block."""
    global _io
    previous, _io = _io, io
    try:
        yield io
    finally:
        _io = previous


def open_file(path: Path, flags: int, mode: int = 0o644) -> int:
    """Open ``path`` (``os.open`` flags); the caller must :func:`close` the descriptor."""
    return _io.open(path, flags, mode)


def write_all(fd: int, data: bytes | memoryview) -> int:
    """Write all of ``data`` at the file position; return its length."""
    view = memoryview(data)
    total = len(view)
    while view:
        view = view[_io.write(fd, view) :]
    return total


def fsync(fd: int) -> None:
    """Flush the file's content to the medium."""
    _io.fsync(fd)


def truncate(fd: int, size: int) -> None:
    """Cut (or extend) the file to ``size`` bytes."""
    _io.truncate(fd, size)


def close(fd: int) -> None:
    """Close a descriptor from :func:`open_file`."""
    _io.close(fd)


def replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, replacing a file there; :func:`fsync_dir` makes it durable."""
    _io.replace(src, dst)


def unlink(path: Path) -> None:
    """Remove the file ``path``; :func:`fsync_dir` makes it durable."""
    _io.unlink(path)


def fsync_dir(directory: Path) -> None:
    """Make the entries created, renamed or removed in ``directory`` durable."""
    _io.fsync_dir(directory)


__all__ = [
    "DurableIO",
    "OsIO",
    "close",
    "fsync",
    "fsync_dir",
    "open_file",
    "replace",
    "truncate",
    "unlink",
    "use",
    "write_all",
]
