"""Writing a root file system slot, and the record of what each slot holds.

A slot is a block device (``/dev/mmcblk0p3``) or, in simulations and tests,
an image file. :class:`SlotWriter` writes it sequentially from an offset, so
an interrupted install resumes where its last checkpoint left off:

- the slot is opened *without* truncation (truncating a block device is
  meaningless, and truncating a half-written file would lose the prefix a
  resume needs);
- :meth:`SlotWriter.sync` fsyncs the slot; the installer calls it *before*
  it records a resume point, so a recorded point never runs ahead of the
  bytes that are really on disk;
- :meth:`SlotWriter.finish` cuts a file-backed slot to the final size (an
  older, longer image must not leave a tail) and syncs it.

:func:`read_slot_prefix` reads the first bytes back, so a resumed install can
rebuild the content hash without downloading them again.

:class:`InstalledArtifacts` records, per slot, which artifact name and
version it holds (``<state_dir>/slots.json``, written atomically). A slot that
is being rewritten is recorded as holding nothing until its update commits.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fleetcast.agent import durable
from fleetcast.agent.atomicfile import write_atomic
from fleetcast.exceptions import DeviceStateError

INSTALLED_FILE: Final = "slots.json"


class SlotWriter:
    """Sequential, resumable writer of one slot.

    Args:
        path: the slot (block device or image file; a file is created if missing).
        offset: where writing starts (0, or the output offset of a resume point).
        max_size: the signed size of the content; a block device smaller
            than this is refused before a single byte is written.

    Raises:
        DeviceStateError: the slot cannot be opened, or is too small.
    """

    def __init__(self, path: Path, *, offset: int, max_size: int) -> None:
        self.path = path
        self.position = offset
        try:
            self._fd = durable.open_file(path, os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError as e:
            raise DeviceStateError(f"cannot open slot {path} for writing: {e}") from e
        try:
            self.is_block_device = stat.S_ISBLK(os.fstat(self._fd).st_mode)
            if self.is_block_device:
                capacity = os.lseek(self._fd, 0, os.SEEK_END)
                if capacity < max_size:
                    raise DeviceStateError(
                        f"slot {path} holds {capacity} bytes, the image needs {max_size}"
                    )
            os.lseek(self._fd, offset, os.SEEK_SET)
        except OSError as e:
            durable.close(self._fd)
            raise DeviceStateError(f"cannot seek slot {path} to {offset}: {e}") from e
        except DeviceStateError:
            durable.close(self._fd)
            raise

    def write(self, data: bytes) -> None:
        """Write ``data`` at the current position.

        Raises:
            DeviceStateError: an I/O error (disk full, device gone).
        """
        try:
            self.position += durable.write_all(self._fd, data)
        except OSError as e:
            raise DeviceStateError(f"cannot write slot {self.path}: {e}") from e

    def sync(self) -> None:
        """Flush everything written so far to the medium.

        Raises:
            DeviceStateError: the flush failed.
        """
        try:
            durable.fsync(self._fd)
        except OSError as e:
            raise DeviceStateError(f"cannot sync slot {self.path}: {e}") from e

    def finish(self, size: int) -> None:
        """Cut a file-backed slot to ``size`` bytes and sync it.

        Raises:
            DeviceStateError: the truncate or flush failed.
        """
        if not self.is_block_device:
            try:
                durable.truncate(self._fd, size)
            except OSError as e:
                raise DeviceStateError(f"cannot truncate slot {self.path}: {e}") from e
        self.sync()

    def close(self) -> None:
        durable.close(self._fd)

    def __enter__(self) -> SlotWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_slot_prefix(path: Path, length: int, *, chunk: int) -> Iterator[bytes]:
    """Yield the first ``length`` bytes of a slot, ``chunk`` bytes at a time.

    Raises:
        DeviceStateError: the slot is shorter than ``length`` or unreadable
            (the resume point cannot be trusted then).
    """
    remaining = length
    try:
        with path.open("rb") as fh:
            while remaining:
                data = fh.read(min(chunk, remaining))
                if not data:
                    raise DeviceStateError(
                        f"slot {path} ends before the resume point ({length} bytes)"
                    )
                remaining -= len(data)
                yield data
    except OSError as e:
        raise DeviceStateError(f"cannot read slot {path}: {e}") from e


@dataclass(frozen=True)
class InstalledTarget:
    """The TUF image target an artifact was installed from (ADR 0008).

    Recorded at commit when ``[trust]`` is on: its ``release_counter`` is the
    floor for the next update (no older release is accepted), and the three
    fields are what a signed version report says is installed.
    """

    path: str
    sha256: str
    release_counter: int

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, "release_counter": self.release_counter}

    @classmethod
    def from_dict(cls, data: object) -> InstalledTarget | None:
        """The record, or ``None`` when ``data`` is not one (absent or damaged: unknown)."""
        if not isinstance(data, dict):
            return None
        path, sha256, counter = data.get("path"), data.get("sha256"), data.get("release_counter")
        if (
            not isinstance(path, str)
            or not isinstance(sha256, str)
            or not isinstance(counter, int)
            or isinstance(counter, bool)
            or counter < 0
        ):
            return None
        return cls(path, sha256, counter)


@dataclass(frozen=True)
class SlotContent:
    """Which artifact a slot holds.

    ``size``/``sha256`` are the image's, from the signed manifest it was
    installed from (recorded at commit; unknown for factory images and old
    records): a delta is only tried from an image with the delta's source hash.
    ``target`` is the TUF target it came from (``[trust]`` on; else ``None``).
    """

    name: str
    version: str
    size: int | None = None
    sha256: str | None = None
    target: InstalledTarget | None = None

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"name": self.name, "version": self.version}
        if self.size is not None and self.sha256 is not None:
            data["size"], data["sha256"] = self.size, self.sha256
        if self.target is not None:
            data["target"] = self.target.to_dict()
        return data


class InstalledArtifacts:
    """The per-slot record of installed artifacts, ``<state_dir>/slots.json``.

    An unreadable record is treated as "unknown" (``None`` for every slot),
    never as a reason to stop: the device still boots, and the next commit
    writes a fresh record.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / INSTALLED_FILE
        self.problem: str | None = None

    def load(self) -> dict[str, SlotContent | None]:
        """Return what each slot holds (``None`` when unknown or being written)."""
        out: dict[str, SlotContent | None] = {"a": None, "b": None}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return out
        except (OSError, ValueError) as e:
            self.problem = f"installed-artifact record {self.path} is unreadable: {e}"
            return out
        if not isinstance(data, dict):
            self.problem = f"installed-artifact record {self.path} is not an object"
            return out
        for slot in out:
            entry = data.get(slot)
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("name"), str)
                and isinstance(entry.get("version"), str)
            ):
                size, sha256 = entry.get("size"), entry.get("sha256")
                image = isinstance(size, int) and isinstance(sha256, str)
                out[slot] = SlotContent(
                    entry["name"],
                    entry["version"],
                    size if image else None,
                    sha256 if image else None,
                    InstalledTarget.from_dict(entry.get("target")),
                )
        return out

    def get(self, slot: str) -> SlotContent | None:
        """Return what ``slot`` holds, or ``None``."""
        return self.load()[slot]

    def set(self, slot: str, content: SlotContent | None) -> None:
        """Record what ``slot`` holds (``None``: being rewritten / unknown).

        Raises:
            DeviceStateError: the record cannot be written.
        """
        current = self.load()
        current[slot] = content
        data = {s: None if c is None else c.to_dict() for s, c in current.items()}
        write_atomic(self.path, json.dumps(data, indent=2, sort_keys=True).encode())


__all__ = ["InstalledArtifacts", "InstalledTarget", "SlotContent", "SlotWriter", "read_slot_prefix"]
