"""Per-device content keys (ADR 0008): stored sealed, wrapped for each device's offer.

An artifact built with ``--encrypt-for-devices`` comes with its content key
in a separate file; ``fleetcast artifact upload --content-key FILE`` sends it
to ``PUT /api/v1/artifacts/{id}/content-key`` (the raw 32 bytes as
``application/octet-stream``, so the audit log, which records JSON bodies,
never sees it). The server:

1. checks the key is the artifact's (its id equals the signed ``key_id``)
   and decrypts and verifies every payload with it (a wrong build is refused
   now, not on every device);
2. stores it *sealed*: ``nonce ‖ AES-256-GCM(kek, key, aad = artifact id)`` in
   ``artifact_keys``. The key-encryption key ``kek`` is 32 random bytes in
   ``<data_dir>/content-keys.kek`` (0600, created at first use, never in the
   database or the blob store). Every server process sharing the database
   needs the same file: copy it with the data directory.
3. wraps the key for a device's X25519 public key (inventory attribute
   ``fleetcast.x25519``) when it builds that device's offer
   (:func:`wrapped_for`). The ephemeral key is derived from ``kek``, the
   artifact and the device key, so the same device gets byte-identical offers
   (stable ETags) and nothing random is stored.

A copy of the blob store reveals nothing; neither does the database without
the key file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.artifact import ArtifactReader, decode_payload, verify_artifact
from fleetcast.core.envelope import (
    KEY_SIZE,
    X25519_ATTRIBUTE,
    WrappedKey,
    content_key_id,
    wrap_key,
    x25519_public_from_hex,
)
from fleetcast.core.manifest import SignedManifest
from fleetcast.exceptions import InvalidDataError, UsageError, ValidationError
from fleetcast.server.blobs import BlobStore
from fleetcast.server.db.models import Artifact, ArtifactKey, Device
from fleetcast.server.errors import InvalidArtifactError, RequestInvalidError

log = logging.getLogger(__name__)

KEK_FILE: Final = "content-keys.kek"
_SEAL_AAD: Final = b"fleetcast-content-key-v1\x00"
_EPHEMERAL_INFO: Final = b"fleetcast-offer-ephemeral-v1\x00"


def kek_path(data_dir: Path) -> Path:
    return data_dir / KEK_FILE


def load_or_create_kek(data_dir: Path) -> bytes:
    """The key-encryption key, created (0600) on first use.

    Creation is a hard link of a complete temporary file, so concurrent
    processes agree on one key and none ever reads a partial file.

    Raises:
        UsageError: the file exists but is not 32 bytes, or cannot be written.
    """
    path = kek_path(data_dir)
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".{KEK_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(KEY_SIZE))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use its key
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    try:
        kek = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read the key-encryption key {path}: {e}") from e
    if len(kek) != KEY_SIZE:
        raise UsageError(f"key-encryption key {path} is not {KEY_SIZE} bytes")
    return kek


def seal(kek: bytes, artifact_id: str, content_key: bytes) -> str:
    """``nonce ‖ AES-256-GCM(kek, content_key)`` as hex, bound to ``artifact_id``."""
    nonce = secrets.token_bytes(12)
    return (nonce + AESGCM(kek).encrypt(nonce, content_key, _SEAL_AAD + artifact_id.encode())).hex()


def unseal(kek: bytes, artifact_id: str, sealed: str) -> bytes:
    """Raises: UsageError: sealed with another key-encryption key (wrong data directory)."""
    raw = bytes.fromhex(sealed)
    try:
        return AESGCM(kek).decrypt(raw[:12], raw[12:], _SEAL_AAD + artifact_id.encode())
    except InvalidTag as e:
        raise UsageError(
            f"the content key of artifact {artifact_id} was sealed with another "
            f"key-encryption key than this server's {KEK_FILE}"
        ) from e


async def store(
    session: AsyncSession,
    blobs: BlobStore,
    data_dir: Path,
    artifact: Artifact,
    content_key: bytes,
    *,
    trusted_keys: list[Ed25519PublicKey],
) -> ArtifactKey:
    """Check ``content_key`` against the artifact and store it sealed (idempotent).

    Raises:
        RequestInvalidError: not 32 bytes, the artifact is not encrypted, or the
            key is not the one its manifest names.
        InvalidArtifactError: a payload does not decrypt to its signed hashes.
    """
    if len(content_key) != KEY_SIZE:
        raise RequestInvalidError(f"a content key is {KEY_SIZE} raw bytes, got {len(content_key)}")
    manifest = SignedManifest.from_dict(artifact.manifest).manifest
    details = {"artifact_id": artifact.id}
    if manifest.content_key_id is None:
        raise RequestInvalidError(
            f"artifact {artifact.name} {artifact.version} has no encrypted payload", details=details
        )
    if content_key_id(content_key) != manifest.content_key_id:
        raise RequestInvalidError(
            f"this is not the content key of {artifact.name} {artifact.version} "
            f"(key id {manifest.content_key_id[:16]})",
            details=details,
        )
    local = blobs.path(artifact.blob_key)
    try:
        # An S3 store keeps a local copy only in the process that took the
        # upload; elsewhere the key id check above is what we can do.
        if local.is_file():
            await asyncio.to_thread(_verify_decrypted, local, content_key, trusted_keys)
    except InvalidDataError as e:
        raise InvalidArtifactError(
            f"artifact {artifact.name} {artifact.version} does not decrypt to its signed "
            f"content: {e}",
            details={**details, "error": type(e).__name__},
        ) from e
    kek = await asyncio.to_thread(load_or_create_kek, data_dir)
    row = await session.get(ArtifactKey, artifact.id)
    if row is None:
        row = ArtifactKey(
            artifact_id=artifact.id,
            key_id=manifest.content_key_id,
            sealed=seal(kek, artifact.id, content_key),
        )
        session.add(row)
        await session.commit()
    return row


class _NullSink:
    def write(self, data: bytes) -> int:
        return len(data)


def _verify_decrypted(path: Path, content_key: bytes, trusted_keys: list[Ed25519PublicKey]) -> None:
    """Decrypt and verify every payload (and the signature, with trusted keys configured)."""
    if trusted_keys:
        verify_artifact(path, trusted_keys, content_key=content_key)
        return
    with path.open("rb") as fh:
        reader = ArtifactReader(fh)
        reader.read_manifest()
        for entry, stream in reader.payloads():
            decode_payload(entry, stream, _NullSink(), content_key=content_key)  # type: ignore[arg-type]


def encrypted(artifact: Artifact) -> bool:
    """Whether the stored manifest has an encrypted payload (no query, no full parse)."""
    signed = (artifact.manifest or {}).get("signed") or {}
    payloads = signed.get("payloads") if isinstance(signed, dict) else None
    return isinstance(payloads, list) and any(
        isinstance(p, dict) and p.get("encryption") is not None for p in payloads
    )


def _ephemeral(kek: bytes, artifact_id: str, device_public: str) -> X25519PrivateKey:
    seed = hmac.new(
        kek,
        _EPHEMERAL_INFO + artifact_id.encode() + b"\x00" + device_public.encode(),
        hashlib.sha256,
    ).digest()
    return X25519PrivateKey.from_private_bytes(seed)


async def wrapped_for(
    session: AsyncSession, data_dir: Path, artifact: Artifact, device: Device
) -> WrappedKey | None:
    """The artifact's content key wrapped for ``device``, or None.

    None when the artifact has no stored per-device key, or the device reports
    no usable ``fleetcast.x25519`` (an older agent): the device then needs a
    group key, or it reports that it has no key. A server whose key file does
    not open the stored key logs why and offers no wrapped key either.
    """
    if getattr(artifact, "format", "fleetcast") != "fleetcast" or not encrypted(artifact):
        return None
    row = await session.get(ArtifactKey, artifact.id)
    if row is None:
        return None
    public = str((device.attributes or {}).get(X25519_ATTRIBUTE, ""))
    try:
        recipient = x25519_public_from_hex(public)
    except ValidationError:
        return None
    try:
        kek = await asyncio.to_thread(load_or_create_kek, data_dir)
        content_key = unseal(kek, artifact.id, row.sealed)
        return wrap_key(content_key, recipient, ephemeral=_ephemeral(kek, artifact.id, public))
    except (UsageError, ValidationError) as e:
        log.error("cannot wrap the content key for device %s: %s", device.id, e)
        return None


__all__ = [
    "KEK_FILE",
    "X25519_ATTRIBUTE",
    "encrypted",
    "kek_path",
    "load_or_create_kek",
    "seal",
    "store",
    "unseal",
    "wrapped_for",
]
