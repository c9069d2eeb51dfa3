"""Where artifact files live: a small protocol and the local-disk implementation.

Blobs are content-addressed by their sha256, so storing the same bytes twice
is harmless and a key never changes meaning. Writes go to a temp file that
is fsynced and then renamed into place, so a crash never leaves a partial
blob under a real key. :class:`fleetcast.server.s3blobs.S3BlobStore` keeps
them in S3-compatible object storage instead and hands devices presigned
URLs, so the bytes bypass Python; :func:`make_blob_store` picks one from the
settings.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from starlette.responses import FileResponse

from fleetcast.server.errors import InsufficientStorageError, TooLargeError

#: Bytes per read when this process sends a blob itself. Starlette reads a file
#: in 64 KiB chunks, each a hop to a worker thread and an ASGI message: a 4 MiB
#: artifact cost 64 of each. Blobs are large and read sequentially.
SEND_CHUNK = 1024 * 1024


class BlobFileResponse(FileResponse):
    """A ranged file response for blobs, in :data:`SEND_CHUNK` reads."""

    chunk_size = SEND_CHUNK


#: errno values that mean "the disk is full", not "the disk is broken".
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

if TYPE_CHECKING:
    from fleetcast.server.settings import Settings


@dataclass(frozen=True)
class StoredBlob:
    """The result of :meth:`BlobStore.put`: its key, digest and size.

    ``created`` is False when a blob with the same content already existed, so
    a caller undoing a failed upload knows not to delete someone else's blob.
    """

    key: str
    sha256: str
    size: int
    created: bool


class BlobStore(Protocol):
    """Storage for artifact files."""

    async def put(self, chunks: AsyncIterable[bytes], *, max_size: int) -> StoredBlob:
        """Store a stream; return its key (derived from the sha256 of the content).

        Raises:
            TooLargeError: the stream is longer than ``max_size`` (nothing is stored).
            InsufficientStorageError: the storage is full (nothing is stored).
        """
        ...

    def path(self, key: str) -> Path:
        """A local file holding the blob (for verification and ranged downloads)."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key``."""
        ...

    async def delete(self, key: str) -> None:
        """Remove a blob; removing a missing blob is not an error."""
        ...

    def presigned_url(self, key: str, *, filename: str) -> str | None:
        """A short-lived URL serving the blob without this server, or None (local files)."""
        ...


def make_blob_store(settings: Settings) -> BlobStore:
    """The blob store the settings name: a local directory, or S3 for ``s3://bucket``.

    Raises:
        UsageError: the S3 configuration is unusable.
    """
    if settings.blob_store == "local":
        return LocalBlobStore(settings.resolved_blob_dir)
    from fleetcast.server.s3blobs import S3BlobStore

    return S3BlobStore.from_settings(settings)


class LocalBlobStore:
    """Blobs as files under ``root/<first two hex digits>/<sha256>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"

    def ensure(self) -> None:
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / relative_path(key)

    def presigned_url(self, key: str, *, filename: str) -> str | None:
        return None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)

    async def put(self, chunks: AsyncIterable[bytes], *, max_size: int) -> StoredBlob:
        self.ensure()
        digest = hashlib.sha256()
        size = 0
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_size:
                        raise TooLargeError(
                            f"upload is larger than the limit of {max_size} bytes",
                            details={"max_size": max_size},
                        )
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
                await asyncio.to_thread(_sync, out)
            key = digest.hexdigest()
            final = self.path(key)
            created = await asyncio.to_thread(_install, tmp, final)
        except OSError as e:
            tmp.unlink(missing_ok=True)  # noqa: ASYNC240
            if e.errno in _DISK_FULL:
                raise InsufficientStorageError(
                    f"the server's blob storage is full ({self.root}): upload not stored",
                    details={"size_received": size},
                ) from e
            raise
        except BaseException:
            # Synchronous on purpose: cleanup must also run when the upload is cancelled.
            tmp.unlink(missing_ok=True)  # noqa: ASYNC240
            raise
        return StoredBlob(key=key, sha256=key, size=size, created=created)


def relative_path(key: str) -> str:
    """Where a blob lives below the store's root: ``<first two hex digits>/<sha256>``.

    Raises:
        ValueError: ``key`` is not a sha256 in lowercase hex.
    """
    if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
        raise ValueError(f"not a blob key: {key!r}")
    return f"{key[:2]}/{key}"


def _sync(out: IO[bytes]) -> None:
    out.flush()
    os.fsync(out.fileno())


def _install(tmp: Path, final: Path) -> bool:
    """Rename ``tmp`` to ``final`` unless identical content is already there."""
    if final.is_file():
        tmp.unlink()
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp makes 0600 files; behind nginx (X-Accel-Redirect) its workers read
    # the blobs too, as members of the server's group (docs/deploy.md).
    tmp.chmod(0o640)
    os.replace(tmp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True
