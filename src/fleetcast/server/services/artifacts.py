"""Artifacts: streamed upload, full verification, storage, listing and deletion.

Upload workflow: the body is streamed into the blob store (size capped,
sha256 computed on the way), then the stored file is verified completely
(format, every payload's size and hashes, signature) before a row is
written. Anything that fails is removed again, unless identical bytes were
already stored.

Trust: when the server has trusted vendor keys, the manifest must be signed
by one of them. With none configured, the server cannot judge a signature,
so it only requires that the manifest carries one and records the key id it
names; the devices, which always hold trusted keys, make the real check.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.artifact import ArtifactReader, VerifiedArtifact, decode_payload, verify_artifact
from fleetcast.core.manifest import SignedManifest
from fleetcast.exceptions import InvalidDataError, SignatureError
from fleetcast.server.blobs import BlobStore
from fleetcast.server.db.models import Artifact, Deployment, DeploymentDevice
from fleetcast.server.errors import ConflictError, InvalidArtifactError, NotFoundError


class _NullSink:
    def write(self, data: bytes) -> int:
        return len(data)


def _verify_untrusted(path: Path) -> tuple[SignedManifest, str]:
    """Structure and hashes only, plus "is signed" (no trusted keys configured)."""
    with path.open("rb") as fh:
        reader = ArtifactReader(fh)
        signed = reader.read_manifest()
        if not signed.signatures:
            name = f"{signed.manifest.name} {signed.manifest.version}"
            raise SignatureError(f"artifact {name} is not signed")
        for entry, stream in reader.payloads():
            decode_payload(entry, stream, _NullSink())  # type: ignore[arg-type]  # write() suffices
    return signed, signed.signatures[0].keyid


def _verify(path: Path, trusted_keys: list[Ed25519PublicKey]) -> tuple[SignedManifest, str]:
    if trusted_keys:
        verified: VerifiedArtifact = verify_artifact(path, trusted_keys)
        return verified.signed, verified.keyid
    return _verify_untrusted(path)


async def upload(
    session: AsyncSession,
    blobs: BlobStore,
    chunks: AsyncIterable[bytes],
    *,
    trusted_keys: list[Ed25519PublicKey],
    max_size: int,
) -> Artifact:
    """Store and register an uploaded artifact.

    Raises:
        TooLargeError: the upload exceeds ``max_size``.
        InvalidArtifactError: malformed, truncated, tampered or wrongly signed.
        ConflictError: an artifact with this name and version exists.
    """
    stored = await blobs.put(chunks, max_size=max_size)
    keep = False
    try:
        try:
            signed, keyid = await asyncio.to_thread(_verify, blobs.path(stored.key), trusted_keys)
        except InvalidDataError as e:
            kind = "signature" if isinstance(e, SignatureError) else "content"
            raise InvalidArtifactError(
                f"artifact rejected: {e}", details={"reason": kind, "error": type(e).__name__}
            ) from e
        manifest = signed.manifest
        existing = await session.scalar(
            select(Artifact.id).where(
                Artifact.name == manifest.name, Artifact.version == manifest.version
            )
        )
        if existing is not None:
            raise ConflictError(
                f"artifact {manifest.name} {manifest.version} already exists",
                details={"artifact_id": existing},
            )
        row = Artifact(
            id=str(uuid.uuid4()),
            name=manifest.name,
            version=manifest.version,
            compatible=list(manifest.compatible),
            payload_type=manifest.payload_type,
            size=stored.size,
            sha256=stored.sha256,
            signer_keyid=keyid,
            manifest=signed.to_dict(),
            blob_key=stored.key,
        )
        session.add(row)
        await session.commit()
        keep = True
        return row
    finally:
        if not keep and stored.created:
            await blobs.delete(stored.key)


async def get_artifact(session: AsyncSession, artifact_id: str) -> Artifact:
    """Raises: NotFoundError: no such artifact."""
    row = await session.get(Artifact, artifact_id)
    if row is None:
        raise NotFoundError(
            f"artifact {artifact_id} not found", details={"artifact_id": artifact_id}
        )
    return row


async def list_artifacts(session: AsyncSession) -> list[Artifact]:
    rows = await session.scalars(select(Artifact).order_by(Artifact.created_at.desc()))
    return list(rows)


async def delete_artifact(session: AsyncSession, blobs: BlobStore, artifact_id: str) -> None:
    """Delete an artifact no deployment uses.

    Raises:
        NotFoundError: no such artifact.
        ConflictError: a deployment uses it.
    """
    row = await get_artifact(session, artifact_id)
    used_by = await session.scalar(
        select(Deployment.id).where(Deployment.artifact_id == artifact_id).limit(1)
    ) or await session.scalar(
        # As an alternative some devices of a deployment get.
        select(DeploymentDevice.deployment_id)
        .where(DeploymentDevice.artifact_id == artifact_id)
        .limit(1)
    )
    if used_by is not None:
        raise ConflictError(
            f"artifact {row.name} {row.version} is used by deployment {used_by}",
            details={"deployment_id": used_by},
        )
    await session.delete(row)
    await session.commit()
    await blobs.delete(row.blob_key)
