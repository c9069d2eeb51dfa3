"""A disk that loses power: the agent's durable I/O, counted, cut after the Nth operation.

:class:`FaultyDisk` is a :class:`~fleetcast.agent.durable.DurableIO` for
:func:`fleetcast.agent.durable.use`. It does every operation for real and
keeps, on the side, what a power cut could still take away:

- **file content** not yet fsynced: for each file written since its last
  ``fsync`` it keeps the content of that ``fsync`` (or what the file held
  when the disk first saw it). At the cut each such file is, by a seeded
  coin, kept as written, put back to its synced content, or *torn*: the
  first ``k`` bytes new, the rest synced (pages written back in order up to
  some point);
- **directory entries** (files created, renamed, replaced or removed) not yet
  made durable by an ``fsync`` of their directory: per directory a seeded
  number of the oldest of them survive (a journaling file system commits its
  metadata in order) and the rest are undone, newest first.

Operations counted (``ops``): ``create`` (an ``open`` that made a new file),
``write``, ``truncate``, ``fsync``, ``rename`` (``replace``), ``unlink`` and
``fsync_dir``. After the ``cut_after``-th one the disk raises
:class:`~tests.agent.conftest.PowerCut` (a ``BaseException``: nothing in the
agent catches it) and refuses every later operation the same way (the
process is dead; only ``close`` still works, so ``finally`` blocks can run).
The test then calls :meth:`FaultyDisk.lose_unsynced` and "reboots".

``fsync`` and directory syncs are bookkeeping only: the model decides what
a cut loses, so the real disk's durability does not matter, and skipping
the real calls makes a run several times faster. ``FaultyDisk()`` without a
``cut_after`` is therefore also a fast disk for the runs around a cut.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.agent.conftest import PowerCut

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR


@dataclass
class _EntryChange:
    """A directory change that is not durable yet, and how to undo it."""

    description: str
    directories: set[Path]
    undo: Callable[[], None]


@dataclass
class FaultyDisk:
    """A page cache in front of the real file system, with a power switch.

    Args:
        cut_after: cut the power right after this operation (1-based);
            ``None``: never (to count the operations of a run).
        rng: decides, at the cut, what the page cache loses.
    """

    cut_after: int | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    ops: list[str] = field(default_factory=list)
    dead: bool = False
    losses: list[str] = field(default_factory=list)
    _fds: dict[int, Path] = field(default_factory=dict)
    _synced: dict[Path, bytes] = field(default_factory=dict)
    _dirty: set[Path] = field(default_factory=set)
    _pending: list[_EntryChange] = field(default_factory=list)

    # ------------------------------------------------------------------ DurableIO

    def open(self, path: Path, flags: int, mode: int) -> int:
        self._alive()
        existed = path.exists()
        fd = os.open(path, flags, mode)
        self._fds[fd] = path
        if flags & _WRITE_FLAGS:
            self._track(path, existed)
            if flags & os.O_TRUNC:
                self._dirty.add(path)
        if not existed:
            self._pending.append(
                _EntryChange(f"create {path.name}", {path.parent}, lambda: self._uncreate(path))
            )
            self._count("create", path)
        return fd

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self._alive()
        written = os.write(fd, data)
        self._dirty.add(self._fds[fd])
        self._count("write", self._fds[fd])
        return written

    def truncate(self, fd: int, size: int) -> None:
        self._alive()
        os.ftruncate(fd, size)
        self._dirty.add(self._fds[fd])
        self._count("truncate", self._fds[fd])

    def fsync(self, fd: int) -> None:
        self._alive()
        path = self._fds[fd]
        if path in self._synced:
            self._synced[path] = path.read_bytes()
            self._dirty.discard(path)
        self._count("fsync", path)

    def close(self, fd: int) -> None:
        os.close(fd)
        self._fds.pop(fd, None)

    def replace(self, src: Path, dst: Path) -> None:
        self._alive()
        old = self._durable_content(dst)
        os.replace(src, dst)
        self._move(src, dst)

        def undo() -> None:
            os.replace(dst, src)
            self._move(dst, src)
            if old is not None:
                dst.write_bytes(old)
                self._synced[dst] = old

        self._pending.append(
            _EntryChange(f"rename {src.name} -> {dst.name}", {src.parent, dst.parent}, undo)
        )
        self._count("rename", dst)

    def unlink(self, path: Path) -> None:
        self._alive()
        old = self._durable_content(path)
        path.unlink()
        self._forget(path)

        def undo() -> None:
            if old is not None:
                path.write_bytes(old)
                self._synced[path] = old

        self._pending.append(_EntryChange(f"unlink {path.name}", {path.parent}, undo))
        self._count("unlink", path)

    def fsync_dir(self, directory: Path) -> None:
        self._alive()
        if not directory.is_dir():
            raise NotADirectoryError(f"not a directory: {directory}")
        for change in self._pending:
            change.directories.discard(directory)
        self._pending = [c for c in self._pending if c.directories]
        self._count("fsync_dir", directory)

    # ------------------------------------------------------------------ the cut

    def lose_unsynced(self) -> list[str]:
        """Do to the files what the power cut did: lose or tear what was not durable.

        Returns:
            What was lost, one line each (also kept in :attr:`losses`).
        """
        for path in sorted(self._dirty):
            if not path.is_file():
                continue
            synced, current = self._synced[path], path.read_bytes()
            fate = self.rng.choice(("kept", "lost", "torn"))
            if fate == "lost":
                path.write_bytes(synced)
            elif fate == "torn":
                k = self.rng.randint(0, len(current))
                path.write_bytes(current[:k] + synced[k:])
                fate = f"torn at {k} of {len(current)}"
            self.losses.append(f"{path.name}: unsynced content {fate}")
        self._dirty.clear()
        by_directory: dict[Path, list[_EntryChange]] = {}
        for change in self._pending:
            by_directory.setdefault(min(change.directories), []).append(change)
        undone: list[_EntryChange] = []
        for changes in by_directory.values():
            undone += changes[self.rng.randint(0, len(changes)) :]
        for change in reversed([c for c in self._pending if c in undone]):
            change.undo()
            self.losses.append(f"undone: {change.description}")
        self._pending.clear()
        return self.losses

    # ------------------------------------------------------------------ bookkeeping

    def _alive(self) -> None:
        if self.dead:
            raise PowerCut("the power is off")

    def _count(self, kind: str, path: Path) -> None:
        self.ops.append(kind)
        if self.cut_after is not None and len(self.ops) >= self.cut_after:
            self.dead = True
            raise PowerCut(f"power cut after operation {len(self.ops)}: {kind} {path.name}")

    def _track(self, path: Path, existed: bool) -> None:
        if path not in self._synced:
            # What the disk held before this run is durable.
            self._synced[path] = path.read_bytes() if existed and path.is_file() else b""

    def _durable_content(self, path: Path) -> bytes | None:
        if not path.is_file():
            return None
        return self._synced.get(path, path.read_bytes())

    def _forget(self, path: Path) -> None:
        self._synced.pop(path, None)
        self._dirty.discard(path)

    def _uncreate(self, path: Path) -> None:
        if path.is_file():
            path.unlink()
        self._forget(path)

    def _move(self, src: Path, dst: Path) -> None:
        """Keep the bookkeeping with the files when ``src`` (a file or a tree) becomes ``dst``."""

        def moved(p: Path) -> Path:
            return dst / p.relative_to(src) if p == src or p.is_relative_to(src) else p

        self._forget(dst)
        self._synced = {moved(p): data for p, data in self._synced.items()}
        self._dirty = {moved(p) for p in self._dirty}
        self._fds = {fd: moved(p) for fd, p in self._fds.items()}
