"""In-place payloads: ``files`` (a tar archive swapped into a directory) and ``script``.

Artifacts without a ``rootfs-image`` are installed into the running system,
without a reboot (the runner's in-place flow, :mod:`fleetcast.agent.inplace`).
This module holds what touches the file system.

``files``: the content is a tar archive of regular files and directories
only, installed as the whole directory ``meta["dest"]`` (an absolute path;
with ``files_roots`` configured it must lie strictly inside one of them).
Next to ``dest`` live three siblings on the same file system, so that
every switch is a ``rename``:

- ``.<name>.fleetcast-new``: the staging directory the archive is extracted
  into (files and directories fsynced) while the payload is being verified;
- ``.<name>.fleetcast-old``: the previous ``dest``, kept as the backup until
  the update commits (deleted) or rolls back (renamed back);
- ``.<name>.fleetcast-discard``: a rolled-back new ``dest`` on its way out.

A switch is two renames, ``dest -> old`` then ``new -> dest``; a restore is
``dest -> discard`` then ``old -> dest``. Between the two renames ``dest`` is
briefly absent; the journal names the payload *before* the first rename, and
:func:`restore` works from any intermediate state (it is idempotent), so a
power cut leaves, once the agent has started again, ``dest`` entirely old or
entirely new.

Extracted files and directories get the archive's permission bits without
setuid, setgid and sticky (``mode & 0o777``) and its mtime; their owner is
the agent's user.

``script``: the content is written (mode 0700) to ``<state_dir>/scripts/<name>``
and run after every other payload has been staged, verified and switched.

``module``: the content is written to ``<state_dir>/modules/<name>/payload``
and installed by the update-module handler ``meta["handler"]``
(:mod:`fleetcast.agent.modules`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Final, Protocol, cast

from fleetcast.agent import durable
from fleetcast.agent.atomicfile import fsync_directory, write_new_file
from fleetcast.agent.modules import MODULES_DIR, ModuleTarget
from fleetcast.core.manifest import Manifest, Payload
from fleetcast.exceptions import (
    ArtifactFormatError,
    DeviceStateError,
    IncompatibleError,
    ValidationError,
)

SCRIPTS_DIR: Final = "scripts"
_COPY_CHUNK: Final = 64 * 1024


class Readable(Protocol):
    """A payload's verified-as-it-goes content stream."""

    def read(self, n: int = -1) -> bytes: ...


# --------------------------------------------------------------------------- destinations


def _is_inside(path: Path, root: Path) -> bool:
    return path != root and path.is_relative_to(root)


def files_dest(payload: Payload, roots: Sequence[Path]) -> Path:
    """The directory a ``files`` payload installs into, checked against ``roots``.

    Symbolic links in ``dest``'s parents are resolved before the allow-list
    check, so a link cannot lead a payload out of an allowed root.

    Raises:
        ValidationError: ``meta["dest"]`` is missing, relative, ``/`` or holds ``..``.
        IncompatibleError: ``dest`` is not strictly inside one of ``roots``
            (when any are configured).
    """
    raw = payload.meta.get("dest")
    what = f"files payload {payload.name!r}"
    if not raw:
        raise ValidationError(f"{what}: meta 'dest' (an absolute directory) is required")
    pure = PurePosixPath(raw)
    if not pure.is_absolute() or ".." in pure.parts or len(pure.parts) < 2:
        raise ValidationError(
            f"{what}: dest {raw!r} must be an absolute path below '/' without '..'"
        )
    dest = Path(os.path.realpath(Path(pure).parent)) / pure.name
    if roots and not any(_is_inside(dest, Path(os.path.realpath(r))) for r in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise IncompatibleError(
            f"{what}: dest {raw} is outside the allowed files_roots ({allowed})"
        )
    return dest


# --------------------------------------------------------------------------- files


def _make_owner_writable(tree: Path) -> None:
    # Without root, a read-only directory (a tar may say 0555) cannot be emptied.
    for root, subdirs, _ in os.walk(tree):
        directory = Path(root)
        directory.chmod(stat.S_IMODE(directory.lstat().st_mode) | 0o700)
        subdirs[:] = [d for d in subdirs if not (directory / d).is_symlink()]


def _rmtree(path: Path) -> None:
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            try:
                shutil.rmtree(path)
            except PermissionError:
                _make_owner_writable(path)
                shutil.rmtree(path)
    except OSError as e:
        raise DeviceStateError(f"cannot remove {path}: {e}") from e


def _rename(src: Path, dst: Path) -> None:
    try:
        durable.replace(src, dst)
    except OSError as e:
        raise DeviceStateError(f"cannot rename {src} to {dst}: {e}") from e


@dataclass(frozen=True)
class FilesTarget:
    """One ``files`` payload: its ``dest`` and the sibling directories of a switch."""

    name: str
    dest: Path

    def _sibling(self, suffix: str) -> Path:
        return self.dest.with_name(f".{self.dest.name}.fleetcast-{suffix}")

    @property
    def staging(self) -> Path:
        return self._sibling("new")

    @property
    def backup(self) -> Path:
        return self._sibling("old")

    @property
    def discard(self) -> Path:
        return self._sibling("discard")

    def prepare(self) -> bool:
        """Clear leftovers, create an empty staging directory; return whether ``dest`` exists.

        A backup without a ``dest`` (a switch cut short while the journal was
        lost) is renamed back first: it is the only complete copy.

        Raises:
            DeviceStateError: ``dest`` is not a plain directory, or the parent is unusable.
        """
        if not self.dest.exists() and not self.dest.is_symlink() and self.backup.is_dir():
            _rename(self.backup, self.dest)
        for leftover in (self.staging, self.discard, self.backup):
            _rmtree(leftover)
        if self.dest.is_symlink() or (self.dest.exists() and not self.dest.is_dir()):
            raise DeviceStateError(f"files payload {self.name}: {self.dest} is not a directory")
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self.staging.mkdir(mode=0o755)
        except OSError as e:
            raise DeviceStateError(f"cannot create staging directory {self.staging}: {e}") from e
        return self.dest.exists()

    def stage(self, content: Readable) -> None:
        """Extract the archive in ``content`` into the staging directory and fsync it.

        Raises:
            ArtifactFormatError: not a tar archive, or a member that is not a
                regular file or directory, absolute, with ``..``, or a duplicate.
            DeviceStateError: the staging directory cannot be written.
        """
        _extract(self.name, content, self.staging)

    def switch(self, *, had_previous: bool, moved_aside: Callable[[], None] | None = None) -> None:
        """Put the staged tree in place: ``dest -> backup``, then ``staging -> dest``.

        Args:
            had_previous: whether ``dest`` existed before this update.
            moved_aside: called between the two renames (``dest`` is absent
                then); the runner's transition hook, so tests can cut there.

        Raises:
            DeviceStateError: a rename failed.
        """
        if had_previous:
            _rename(self.dest, self.backup)
            fsync_directory(self.dest.parent)
            if moved_aside is not None:
                moved_aside()
        _rename(self.staging, self.dest)
        fsync_directory(self.dest.parent)

    def restore(self, *, had_previous: bool) -> None:
        """Undo :meth:`switch` from whatever point it reached (idempotent).

        Raises:
            DeviceStateError: a rename or removal failed.
        """
        parent = self.dest.parent
        if had_previous:
            if self.backup.is_dir():
                if self.dest.exists():
                    _rmtree(self.discard)
                    _rename(self.dest, self.discard)
                    fsync_directory(parent)
                _rename(self.backup, self.dest)
                fsync_directory(parent)
        elif self.dest.exists():
            # There was no dest before this update: whatever is there is new.
            _rmtree(self.discard)
            _rename(self.dest, self.discard)
            fsync_directory(parent)
        self.clean(keep_backup=False)

    def clean(self, *, keep_backup: bool) -> None:
        """Remove the staging and discard directories (and the backup, unless kept).

        Raises:
            DeviceStateError: a removal failed.
        """
        leftovers = [self.staging, self.discard] + ([] if keep_backup else [self.backup])
        for path in leftovers:
            _rmtree(path)
        if self.dest.parent.is_dir():
            fsync_directory(self.dest.parent)


# The all-zero end-of-archive block (not in the type stubs: an internal name).
_EOF_HEADER: Final[type[Exception]] = tarfile.EOFHeaderError  # type: ignore[attr-defined]


class _StrictTarInfo(tarfile.TarInfo):
    """Only an all-zero block ends the archive; any other bad header is an error.

    (``tarfile`` otherwise treats a corrupt header after the first member as
    the end of the archive, silently dropping the rest.)
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> _StrictTarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except _EOF_HEADER:
            raise
        except tarfile.HeaderError as e:
            raise _CorruptTarError(str(e) or type(e).__name__) from e


class _CorruptTarError(Exception):
    pass


def _member_path(payload: str, member: tarfile.TarInfo) -> PurePosixPath | None:
    """The member's path relative to the staging directory (``None``: the root itself)."""
    name = member.name
    what = f"files payload {payload!r}: member {name!r}"
    pure = PurePosixPath(name)
    if not name or "\x00" in name or pure.is_absolute():
        raise ArtifactFormatError(f"{what}: absolute or empty paths are not allowed")
    parts = [p for p in pure.parts if p != "."]
    if ".." in parts:
        raise ArtifactFormatError(f"{what}: '..' is not allowed")
    if member.issparse() or not (member.isreg() or member.isdir()):
        kind = {
            tarfile.SYMTYPE: "symbolic link",
            tarfile.LNKTYPE: "hard link",
            tarfile.CHRTYPE: "character device",
            tarfile.BLKTYPE: "block device",
            tarfile.FIFOTYPE: "fifo",
        }.get(member.type, f"tar type {member.type!r}")
        if member.issparse():
            kind = "sparse file"
        raise ArtifactFormatError(
            f"{what} is a {kind}; only regular files and directories are allowed"
        )
    if not parts:
        if member.isdir():
            return None
        raise ArtifactFormatError(f"{what}: a file cannot be the archive root")
    return PurePosixPath(*parts)


def _extract(payload: str, content: Readable, staging: Path) -> None:
    dir_modes: dict[Path, tuple[int, float]] = {staging: (0o755, 0.0)}
    try:
        with tarfile.open(None, "r|", cast("IO[bytes]", content), tarinfo=_StrictTarInfo) as tar:
            for member in tar:
                relative = _member_path(payload, member)
                target = staging if relative is None else staging / relative
                _make_parents(payload, staging, target, dir_modes)
                if member.isdir():
                    if target.exists() and not target.is_dir():
                        raise ArtifactFormatError(
                            f"files payload {payload!r}: {member.name!r} is both file and directory"
                        )
                    target.mkdir(mode=0o700, exist_ok=True)
                    dir_modes[target] = (member.mode & 0o777, float(member.mtime))
                    continue
                source = tar.extractfile(member)
                assert source is not None
                _write_file(payload, member, target, source)
    except (tarfile.TarError, EOFError, _CorruptTarError) as e:
        raise ArtifactFormatError(
            f"files payload {payload!r} is not a valid tar archive: {e}"
        ) from e
    except OSError as e:
        raise DeviceStateError(f"cannot extract files payload {payload!r}: {e}") from e
    try:
        # Deepest first: a read-only directory must not block its own children.
        for directory in sorted(dir_modes, key=lambda p: len(p.parts), reverse=True):
            mode, mtime = dir_modes[directory]
            directory.chmod(mode)
            if mtime:
                os.utime(directory, (mtime, mtime))
            fsync_directory(directory)
        fsync_directory(staging.parent)
    except OSError as e:
        raise DeviceStateError(f"cannot finish staging directory {staging}: {e}") from e


def _make_parents(
    payload: str, staging: Path, target: Path, dir_modes: dict[Path, tuple[int, float]]
) -> None:
    for parent in reversed(target.parents):
        if not parent.is_relative_to(staging) or parent == staging:
            continue
        if parent.is_dir():
            continue
        if parent.exists():
            inside = parent.relative_to(staging)
            raise ArtifactFormatError(
                f"files payload {payload!r}: {inside} is a file, not a directory"
            )
        parent.mkdir(mode=0o700)
        dir_modes.setdefault(parent, (0o755, 0.0))


def _write_file(payload: str, member: tarfile.TarInfo, target: Path, source: Readable) -> None:
    try:
        write_new_file(target, source.read, mode=member.mode & 0o777, chunk=_COPY_CHUNK)
    except FileExistsError as e:
        raise ArtifactFormatError(
            f"files payload {payload!r}: member {member.name!r} appears twice"
        ) from e
    os.utime(target, (float(member.mtime), float(member.mtime)))


# --------------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class ScriptTarget:
    """One ``script`` payload and where it is written before it runs."""

    name: str
    path: Path

    def stage(self, content: Readable) -> None:
        """Write the script (mode 0700) and fsync it.

        Raises:
            DeviceStateError: the file cannot be written.
        """
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                durable.unlink(self.path)
            write_new_file(self.path, content.read, mode=0o700, chunk=_COPY_CHUNK)
        except OSError as e:
            raise DeviceStateError(f"cannot write script {self.path}: {e}") from e
        fsync_directory(self.path.parent)


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class InPlacePlan:
    """Where each payload of an in-place artifact goes, in manifest order."""

    files: tuple[FilesTarget, ...]
    scripts: tuple[ScriptTarget, ...]
    scripts_dir: Path
    modules: tuple[ModuleTarget, ...] = ()
    modules_dir: Path | None = None

    @classmethod
    def of(cls, manifest: Manifest, *, state_dir: Path, roots: Sequence[Path]) -> InPlacePlan:
        """Plan an artifact of ``files``, ``script`` and ``module`` payloads.

        Raises:
            ValidationError: a ``dest`` is malformed, or two of them overlap.
            IncompatibleError: a ``dest`` is outside ``files_roots``, or a payload
                is a ``rootfs-image``.
        """
        files: list[FilesTarget] = []
        scripts: list[ScriptTarget] = []
        modules: list[ModuleTarget] = []
        scripts_dir = state_dir / SCRIPTS_DIR
        modules_dir = state_dir / MODULES_DIR
        for payload in manifest.payloads:
            if payload.type == "files":
                files.append(FilesTarget(payload.name, files_dest(payload, roots)))
            elif payload.type == "script":
                scripts.append(ScriptTarget(payload.name, scripts_dir / payload.name))
            elif payload.type == "module":
                modules.append(ModuleTarget(payload, modules_dir / payload.name))
            else:
                raise IncompatibleError(f"payload {payload.name!r}: {payload.type} is not in-place")
        for i, a in enumerate(files):
            for b in files[i + 1 :]:
                if a.dest == b.dest or _is_inside(a.dest, b.dest) or _is_inside(b.dest, a.dest):
                    raise ValidationError(
                        f"files payloads {a.name!r} and {b.name!r} overlap ({a.dest}, {b.dest})"
                    )
        return cls(tuple(files), tuple(scripts), scripts_dir, tuple(modules), modules_dir)

    def prepare(self) -> tuple[str, ...]:
        """Clear leftovers and create staging; return the ``files`` payloads without a ``dest`` yet.

        Raises:
            DeviceStateError: see :meth:`FilesTarget.prepare`.
        """
        _rmtree(self.scripts_dir)
        if self.modules_dir is not None:
            _rmtree(self.modules_dir)
        return tuple(t.name for t in self.files if not t.prepare())

    def stage(self, payload: Payload, content: Readable) -> None:
        """Stage one payload's content (the installer verifies it afterwards).

        Raises:
            ArtifactFormatError: a bad ``files`` archive.
            DeviceStateError: the staging area cannot be written.
        """
        targets: list[FilesTarget | ScriptTarget | ModuleTarget] = [
            *self.files,
            *self.scripts,
            *self.modules,
        ]
        for target in targets:
            if target.name == payload.name:
                target.stage(content)
                return
        raise DeviceStateError(f"payload {payload.name!r} is not part of the plan")

    def discard(self) -> None:
        """Drop every staged payload (nothing was switched).

        Raises:
            DeviceStateError: a removal failed.
        """
        for target in self.files:
            target.clean(keep_backup=True)
        _rmtree(self.scripts_dir)
        if self.modules_dir is not None:
            _rmtree(self.modules_dir)

    def script_env(self, script: ScriptTarget, base: Mapping[str, str]) -> dict[str, str]:
        """The environment of a script: ``base`` (what health checks get) plus its name."""
        return {**base, "FLEETCAST_PAYLOAD_NAME": script.name}


__all__ = [
    "SCRIPTS_DIR",
    "FilesTarget",
    "InPlacePlan",
    "Readable",
    "ScriptTarget",
    "files_dest",
]
