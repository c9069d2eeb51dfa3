"""The operator's copy of offline-signed metadata: ``DIR/image/`` and ``DIR/director/``.

Files are named as on a consistent-snapshot repository, ``<version>.<role>.json``
(``1.root.json``, ``2.bins-3a.json``), and every version is kept: the root chain
is what devices walk, and the history shows who released what. Each file is
written to a temporary name, fsynced and renamed, so an interrupted command never
leaves a half-written file that ``fleetcast tuf upload`` would send.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata, Root, Targets
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from fleetcast.exceptions import UsageError, ValidationError
from fleetcast.trust import BINS_PREFIX

_FILE = re.compile(r"^([1-9][0-9]*)\.([A-Za-z0-9._-]+)\.json$")


def parse_name(name: str) -> tuple[int, str]:
    """``"2.bins-3a.json"`` → ``(2, "bins-3a")``.

    Raises:
        UsageError: not a ``<version>.<role>.json`` name.
    """
    match = _FILE.match(name)
    if not match:
        raise UsageError(f"{name} is not a metadata file name like 1.root.json")
    return int(match.group(1)), match.group(2)


def load_file(path: Path) -> Metadata[Any]:
    """Read one metadata file.

    Raises:
        UsageError: the file cannot be read.
        ValidationError: it is not TUF metadata.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    return parse_metadata(data, str(path))


def parse_metadata(data: bytes, what: str) -> Metadata[Any]:
    """Parse TUF metadata bytes.

    Raises:
        ValidationError: not TUF metadata.
    """
    try:
        return Metadata.from_bytes(data)
    except (DeserializationError, RepositoryError, ValueError, TypeError, KeyError) as e:
        raise ValidationError(f"{what} is not valid TUF metadata: {e}") from e


def to_bytes(md: Metadata[Any]) -> bytes:
    """The file form of ``md``: indented JSON with sorted keys, for people to read."""
    return md.to_bytes(JSONSerializer(compact=False))


@dataclass(frozen=True)
class MetadataDir:
    """The metadata files of one repository (``DIR/image`` or ``DIR/director``)."""

    path: Path

    def versions(self, role: str) -> list[int]:
        """The versions of ``role`` present, ascending."""
        if not self.path.is_dir():
            return []
        found = []
        for entry in self.path.iterdir():
            match = _FILE.match(entry.name)
            if match and match.group(2) == role:
                found.append(int(match.group(1)))
        return sorted(found)

    def roles(self) -> set[str]:
        """Every role with at least one file."""
        if not self.path.is_dir():
            return set()
        return {m.group(2) for e in self.path.iterdir() if (m := _FILE.match(e.name))}

    def latest_version(self, role: str) -> int:
        """The newest version of ``role`` present, 0 if none."""
        versions = self.versions(role)
        return versions[-1] if versions else 0

    def file(self, role: str, version: int) -> Path:
        return self.path / f"{version}.{role}.json"

    def load(self, role: str, version: int | None = None) -> Metadata[Any]:
        """Version ``version`` of ``role`` (default: the newest).

        Raises:
            UsageError: there is no such file.
            ValidationError: the file is not TUF metadata.
        """
        version = version or self.latest_version(role)
        path = self.file(role, version)
        if not version or not path.is_file():
            raise UsageError(f"no {role} metadata in {self.path} (run `fleetcast keys init`?)")
        return load_file(path)

    def write(self, md: Metadata[Any], role: str) -> Path:
        """Write ``md`` as ``<version>.<role>.json`` atomically; return its path."""
        self.path.mkdir(parents=True, exist_ok=True)
        return write_atomic(self.file(role, md.signed.version), to_bytes(md))

    def delegators(self, role: str, version: int) -> list[tuple[str, Root | Targets]]:
        """Who must have signed version ``version`` of ``role``, per ``missing_signatures``.

        A root is checked against its predecessor (when there is one) and
        itself; ``targets`` against the newest root; a bin against the newest
        ``targets``.

        Raises:
            UsageError / ValidationError: a needed delegator file is missing or bad.
        """
        if role == "root":
            this: Root = self.load("root", version).signed
            pairs: list[tuple[str, Root | Targets]] = []
            if version > 1:
                pairs.append((f"root v{version - 1}", self.load("root", version - 1).signed))
            return [*pairs, (f"root v{version}", this)]
        if role.startswith(BINS_PREFIX + "-"):
            targets: Targets = self.load("targets").signed
            return [("the targets delegation", targets)]
        root: Root = self.load("root").signed
        return [(f"root v{root.version}", root)]


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file, fsync, rename, fsync dir."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


__all__ = ["MetadataDir", "load_file", "parse_metadata", "parse_name", "to_bytes", "write_atomic"]
