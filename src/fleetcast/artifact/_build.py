"""Building and inspecting artifacts on the operator's machine."""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from fleetcast.artifact._format import (
    ArtifactReader,
    PayloadSource,
    decode_payload,
    new_manifest_payload,
    write_artifact,
)
from fleetcast.core.envelope import (
    DEFAULT_CHUNK_SIZE,
    KEY_SIZE,
    MAX_CHUNK_SIZE,
    NONCE_PREFIX_SIZE,
    PayloadEncryption,
    content_key_id,
    new_content_key,
    wrap_key,
)
from fleetcast.core.manifest import Manifest, SignedManifest
from fleetcast.exceptions import UsageError


@dataclass(frozen=True)
class Encryption:
    """How :func:`build_artifact` encrypts every payload (ADR 0008, "Encrypted payloads").

    Attributes:
        recipients: group X25519 public keys; the content key is wrapped for
            each into the signed manifest's ``wrapped_keys``. Empty: per-device
            only (keep ``content_key`` and upload it with the artifact).
        content_key: the artifact's 32-byte key (default: random).
        chunk_size: plaintext bytes per encrypted chunk (at most 1 MiB).

    Raises:
        UsageError: a bad key length or chunk size.
    """

    recipients: tuple[X25519PublicKey, ...] = ()
    content_key: bytes = field(default_factory=new_content_key, repr=False)
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self) -> None:
        if len(self.content_key) != KEY_SIZE:
            raise UsageError(f"a content key is {KEY_SIZE} bytes")
        if not 0 < self.chunk_size <= MAX_CHUNK_SIZE:
            raise UsageError(f"chunk_size must be 1..{MAX_CHUNK_SIZE}")

    @property
    def key_id(self) -> str:
        return content_key_id(self.content_key)

    def parameters(self) -> PayloadEncryption:
        """Fresh parameters for one payload (its own random nonce prefix)."""
        return PayloadEncryption(
            chunk_size=self.chunk_size,
            nonce_prefix=secrets.token_bytes(NONCE_PREFIX_SIZE).hex(),
            key_id=self.key_id,
        )


def build_artifact(
    output: Path,
    *,
    name: str,
    version: str,
    compatible: list[str],
    payloads: list[PayloadSource],
    key: Ed25519PrivateKey,
    depends: dict[str, str] | None = None,
    provides: dict[str, str] | None = None,
    description: str = "",
    level: int = 3,
    encryption: Encryption | None = None,
) -> SignedManifest:
    """Compress ``payloads``, sign the manifest with ``key`` and write ``output`` atomically.

    With ``encryption``, every payload is encrypted with its content key and
    the key is wrapped for its recipients into the manifest (both signed).

    Raises:
        ValidationError: a manifest field is invalid.
        UsageError: a payload file is missing.
    """
    for source in payloads:
        if not source.path.is_file():
            raise UsageError(f"payload file not found: {source.path}")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".build-") as tmp:
        compressed = {s.name: Path(tmp) / f"{s.name}.zst" for s in payloads}
        packed = tuple(
            new_manifest_payload(
                s,
                compressed[s.name],
                level,
                encryption=None
                if encryption is None
                else (encryption.content_key, encryption.parameters()),
            )
            for s in payloads
        )
        wrapped = None
        if encryption is not None and encryption.recipients:
            wrapped = tuple(wrap_key(encryption.content_key, r) for r in encryption.recipients)
        manifest = Manifest(
            name=name,
            version=version,
            compatible=tuple(compatible),
            payloads=packed,
            depends=dict(depends or {}),
            provides=dict(provides or {}),
            description=description,
            wrapped_keys=wrapped,
        )
        signed = SignedManifest.create(manifest, key)
        partial = Path(tmp) / "artifact"
        with partial.open("wb") as out:
            write_artifact(out, signed, compressed)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, output)
    return signed


def read_manifest(path: Path) -> SignedManifest:
    """Read the signed manifest of an artifact file without verifying it.

    Raises:
        InvalidDataError: not a well-formed artifact.
    """
    with path.open("rb") as fh:
        return ArtifactReader(fh).read_manifest()


class _NullSink:
    def write(self, data: bytes) -> int:
        return len(data)


@dataclass(frozen=True)
class VerifiedArtifact:
    """An artifact whose signature and every payload hash were checked.

    ``content_verified`` is False when encrypted payloads were checked
    without their key: only the stored (encrypted) members' sizes and hashes.
    """

    signed: SignedManifest
    keyid: str
    sha256: str
    size: int
    content_verified: bool = True


def verify_artifact(
    path: Path, trusted_keys: list[Ed25519PublicKey], *, content_key: bytes | None = None
) -> VerifiedArtifact:
    """Verify an artifact file completely: signature, then every payload's size and hashes.

    Encrypted payloads are decrypted and verified with ``content_key``;
    without it only their stored members are (see :func:`decode_payload`).

    Raises:
        SignatureError: unsigned or not signed by a trusted key.
        InvalidDataError: malformed, truncated or tampered (or a wrong content key).
    """
    file_hash = hashlib.sha256()
    verified_all = True
    with path.open("rb") as raw:
        reader = ArtifactReader(_HashingReader(raw, file_hash))  # type: ignore[arg-type]
        signed = reader.read_manifest()
        keyid = signed.verify(trusted_keys)
        for entry, stream in reader.payloads():
            sink = _NullSink()
            verified_all &= decode_payload(entry, stream, sink, content_key=content_key)  # type: ignore[arg-type]
        # Drain the tar end-of-archive padding so the file hash covers every byte.
        while raw_chunk := raw.read(65536):
            file_hash.update(raw_chunk)
    return VerifiedArtifact(signed, keyid, file_hash.hexdigest(), path.stat().st_size, verified_all)


class _HashingReader:
    def __init__(self, raw: object, digest: hashlib._Hash) -> None:
        self._raw = raw
        self._digest = digest

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._raw.read(n)  # type: ignore[attr-defined]
        self._digest.update(data)
        return data


__all__ = ["Encryption", "VerifiedArtifact", "build_artifact", "read_manifest", "verify_artifact"]
