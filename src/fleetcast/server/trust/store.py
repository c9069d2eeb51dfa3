"""Stored TUF metadata (``tuf_metadata``): exact bytes by repository, role and version.

Files are named as on a consistent-snapshot repository: ``N.<role>.json``
for every role but ``timestamp.json``. The management API also accepts the
unversioned ``<role>.json`` for "the newest version" (what ``fleetcast
artifact release`` fetches to add a target to a bin).

Writers of one repository serialise on a PostgreSQL advisory lock
(:func:`advisory_lock`); SQLite has one writer anyway.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata
from tuf.api.serialization import DeserializationError

from fleetcast.server.db.trust_models import TufMetadata
from fleetcast.server.errors import NotFoundError, TufMetadataInvalidError

# Constants shared by every server process (like the rollout engine's).
#: Held while a repository's metadata is written (uploads, snapshot/timestamp signing).
REPOSITORY_LOCK: Final = 0x466C7472
#: Held while online keys are created or switched.
KEYS_LOCK: Final = 0x466C746B
#: Highest metadata version stored (the column is a 32-bit integer on PostgreSQL).
MAX_VERSION: Final = 2**31 - 1

_FILE = re.compile(
    r"^(?:(?P<version>[1-9][0-9]{0,9})\.)?(?P<role>[A-Za-z][A-Za-z0-9_-]{0,63})\.json$"
)


@dataclass(frozen=True)
class FileName:
    """A metadata file name: ``role`` and ``version`` (None: unversioned)."""

    role: str
    version: int | None

    @classmethod
    def parse(cls, name: str) -> FileName:
        """``"3.bins-0a.json"`` → ``FileName("bins-0a", 3)``.

        Raises:
            NotFoundError: not a metadata file name.
        """
        match = _FILE.match(name)
        if match is None:
            raise NotFoundError(f"no metadata file {name!r}", details={"file": name})
        version = int(match.group("version") or 0)
        if version > MAX_VERSION:
            raise NotFoundError(f"no metadata file {name!r}", details={"file": name})
        return cls(match.group("role"), version or None)

    @property
    def consistent(self) -> bool:
        """Whether a consistent-snapshot client asks for it (``N.<role>.json``, timestamp)."""
        return (self.role == "timestamp") == (self.version is None)


async def advisory_lock(session: AsyncSession, key: int) -> None:
    """Wait for the transaction-scoped lock ``key`` (PostgreSQL; a no-op on SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(key)))


async def try_advisory_lock(session: AsyncSession, key: int) -> bool:
    """Take the transaction-scoped lock ``key`` if free; False when another process holds it."""
    if session.get_bind().dialect.name == "postgresql":
        return bool(await session.scalar(select(func.pg_try_advisory_xact_lock(key))))
    return True


def parse(data: bytes, what: str) -> Metadata[Any]:
    """Parse metadata bytes with python-tuf.

    Raises:
        TufMetadataInvalidError: not TUF metadata python-tuf accepts.
    """
    try:
        return Metadata.from_bytes(data)
    except (DeserializationError, RepositoryError, ValueError, TypeError, KeyError) as e:
        raise TufMetadataInvalidError(
            f"{what} is not valid TUF metadata: {e}", details={"what": what}
        ) from e


async def get(session: AsyncSession, repo: str, role: str, version: int) -> TufMetadata | None:
    return await session.get(TufMetadata, (repo, role, version))


async def latest(session: AsyncSession, repo: str, role: str) -> TufMetadata | None:
    """The newest stored version of ``role`` in ``repo``, or None."""
    result: TufMetadata | None = await session.scalar(
        select(TufMetadata)
        .where(TufMetadata.repo == repo, TufMetadata.role == role)
        .order_by(TufMetadata.version.desc())
        .limit(1)
    )
    return result


async def latest_metadata(session: AsyncSession, repo: str, role: str) -> Metadata[Any] | None:
    """The newest stored version of ``role``, parsed (it was verified when stored)."""
    row = await latest(session, repo, role)
    return None if row is None else parse(row.data, f"stored {repo} {role}")


@dataclass(frozen=True)
class FileInfo:
    """What a snapshot lists of one file, without its bytes."""

    role: str
    version: int
    length: int
    sha256: str
    expires: dt.datetime
    target_count: int | None


async def newest_files(session: AsyncSession, repo: str) -> dict[str, FileInfo]:
    """The newest version of every role of ``repo`` (bytes not loaded), by role."""
    newer = aliased(TufMetadata)
    rows = await session.execute(
        select(
            TufMetadata.role,
            TufMetadata.version,
            TufMetadata.length,
            TufMetadata.sha256,
            TufMetadata.expires,
            TufMetadata.target_count,
        ).where(
            TufMetadata.repo == repo,
            ~select(newer.version)
            .where(
                newer.repo == TufMetadata.repo,
                newer.role == TufMetadata.role,
                newer.version > TufMetadata.version,
            )
            .exists(),
        )
    )
    return {row.role: FileInfo(*row) for row in rows}


def add(
    session: AsyncSession,
    repo: str,
    role: str,
    md: Metadata[Any],
    data: bytes,
    *,
    now: dt.datetime,
) -> TufMetadata:
    """Store ``data`` (the exact bytes of ``md``) as ``role`` version ``md.signed.version``."""
    targets = getattr(md.signed, "targets", None)
    row = TufMetadata(
        repo=repo,
        role=role,
        version=md.signed.version,
        data=data,
        length=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        expires=md.signed.expires,
        target_count=len(targets) if isinstance(targets, dict) else None,
        created_at=now,
    )
    session.add(row)
    return row


async def read(session: AsyncSession, repo: str, name: FileName) -> TufMetadata:
    """The stored file ``name`` (unversioned: the newest).

    Raises:
        NotFoundError: no such role or version.
    """
    if name.version is None:
        row = await latest(session, repo, name.role)
    else:
        row = await get(session, repo, name.role, name.version)
    if row is None:
        label = f"{name.version}.{name.role}" if name.version else name.role
        raise NotFoundError(
            f"the {repo} repository has no {label}.json",
            details={"repo": repo, "role": name.role, "version": name.version},
        )
    return row


__all__ = [
    "KEYS_LOCK",
    "MAX_VERSION",
    "REPOSITORY_LOCK",
    "FileInfo",
    "FileName",
    "add",
    "advisory_lock",
    "get",
    "latest",
    "latest_metadata",
    "newest_files",
    "parse",
    "read",
    "try_advisory_lock",
]
