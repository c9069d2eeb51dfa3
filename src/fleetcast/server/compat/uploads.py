"""Storing artifacts of the other formats: ``file`` (opaque, for DDI clients) and ``mender``.

Same workflow as native uploads (``fleetcast.server.services.artifacts``):
stream into the blob store (size capped, sha256 on the way), read the
stored file completely, then write the row; anything that fails removes
the blob again unless identical bytes were already stored.

- ``mender``: the file is read by :func:`read_mender_artifact` (structure and
  every manifest hash); name and compatible device types come from its
  header, the version from the upload (default: the artifact name).
- ``file``: the server does not look inside (a SWUpdate ``.swu`` or a RAUC
  bundle is verified by the device against its own keys). Name, version,
  compatible device types and the file name DDI clients see come from the
  upload; sha1 and md5 are computed for DDI's ``hashes``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.exceptions import InvalidDataError
from fleetcast.server.blobs import BlobStore
from fleetcast.server.compat.mender_artifact import read_mender_artifact
from fleetcast.server.db.models import Artifact
from fleetcast.server.errors import ConflictError, InvalidArtifactError, RequestInvalidError
from fleetcast.server.services.formats import ArtifactFormat

_FILENAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
_TAR_NAME: Final = 100


async def sniff(chunks: AsyncIterable[bytes]) -> tuple[ArtifactFormat, AsyncIterator[bytes]]:
    """Tell a Mender artifact (first tar member ``version``) from a Fleetcast one.

    Returns the format and a stream that still yields every byte.
    """
    iterator = aiter(chunks)
    head = b""
    async for chunk in iterator:
        head += chunk
        if len(head) >= _TAR_NAME:
            break
    first_member = head[:_TAR_NAME].split(b"\0", 1)[0]
    found = ArtifactFormat.MENDER if first_member == b"version" else ArtifactFormat.FLEETCAST

    async def replay() -> AsyncIterator[bytes]:
        if head:
            yield head
        async for rest in iterator:
            yield rest

    return found, replay()


def _digests(path: Path) -> tuple[str, str]:
    sha1, md5 = hashlib.sha1(), hashlib.md5()  # noqa: S324  # DDI clients ask for them
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            sha1.update(chunk)
            md5.update(chunk)
    return sha1.hexdigest(), md5.hexdigest()


def _mender_meta(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return read_mender_artifact(fh).to_dict()


def _check_text(value: str | None, what: str) -> str:
    if not value or len(value) > 128:
        raise RequestInvalidError(
            f"{what} is required (1 to 128 characters)", details={"field": what}
        )
    return value


async def upload_foreign(
    session: AsyncSession,
    blobs: BlobStore,
    chunks: AsyncIterable[bytes],
    *,
    format: ArtifactFormat,
    max_size: int,
    name: str | None = None,
    version: str | None = None,
    compatible: Sequence[str] = (),
    filename: str | None = None,
) -> Artifact:
    """Store and register a ``file`` or ``mender`` artifact.

    Raises:
        RequestInvalidError: a ``file`` upload without name, version,
            compatible device types or a plain file name.
        TooLargeError: the upload exceeds ``max_size``.
        InvalidArtifactError: a Mender artifact that is malformed or tampered.
        ConflictError: an artifact with this name and version exists.
    """
    if format == ArtifactFormat.FILE:
        name = _check_text(name, "name")
        version = _check_text(version, "version")
        if not compatible:
            raise RequestInvalidError(
                "a file artifact needs its compatible device types", details={"field": "compatible"}
            )
        if not filename or not _FILENAME.match(filename):
            raise RequestInvalidError(
                "a file artifact needs a plain file name (e.g. acme-fw-1.1.swu)",
                details={"field": "filename"},
            )
    stored = await blobs.put(chunks, max_size=max_size)
    keep = False
    try:
        path = blobs.path(stored.key)
        if format == ArtifactFormat.MENDER:
            try:
                meta = await asyncio.to_thread(_mender_meta, path)
            except InvalidDataError as e:
                raise InvalidArtifactError(
                    f"Mender artifact rejected: {e}",
                    details={"reason": "content", "error": type(e).__name__},
                ) from e
            name = str(meta["artifact_name"])
            version = _check_text(version or name, "version")
            compatible = list(meta["device_types_compatible"])
            payload_type = (meta["payload_types"] or ["mender"])[0]
        else:
            assert name is not None and version is not None and filename is not None
            sha1, md5 = await asyncio.to_thread(_digests, path)
            meta = {"filename": filename, "sha1": sha1, "md5": md5}
            payload_type = filename.rsplit(".", 1)[-1] if "." in filename else "file"
        existing = await session.scalar(
            select(Artifact.id).where(Artifact.name == name, Artifact.version == version)
        )
        if existing is not None:
            raise ConflictError(
                f"artifact {name} {version} already exists", details={"artifact_id": existing}
            )
        row = Artifact(
            id=str(uuid.uuid4()),
            name=name,
            version=version,
            format=format.value,
            compatible=sorted(set(compatible)),
            payload_type=payload_type[:32],
            size=stored.size,
            sha256=stored.sha256,
            signer_keyid="",
            manifest=meta,
            blob_key=stored.key,
        )
        session.add(row)
        await session.commit()
        keep = True
        return row
    finally:
        if not keep and stored.created:
            await blobs.delete(stored.key)
