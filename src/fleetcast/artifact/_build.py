"""Building and inspecting artifacts on the operator's machine."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleetcast.artifact._format import (
    ArtifactReader,
    PayloadSource,
    decode_payload,
    new_manifest_payload,
    write_artifact,
)
from fleetcast.core.manifest import Manifest, SignedManifest
from fleetcast.exceptions import UsageError


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
) -> SignedManifest:
    """Compress ``payloads``, sign the manifest with ``key`` and write ``output`` atomically.

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
        manifest = Manifest(
            name=name,
            version=version,
            compatible=tuple(compatible),
            payloads=tuple(new_manifest_payload(s, compressed[s.name], level) for s in payloads),
            depends=dict(depends or {}),
            provides=dict(provides or {}),
            description=description,
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
    """An artifact whose signature and every payload hash were checked."""

    signed: SignedManifest
    keyid: str
    sha256: str
    size: int


def verify_artifact(path: Path, trusted_keys: list[Ed25519PublicKey]) -> VerifiedArtifact:
    """Verify an artifact file completely: signature, then every payload's size and hashes.

    Raises:
        SignatureError: unsigned or not signed by a trusted key.
        InvalidDataError: malformed, truncated or tampered.
    """
    file_hash = hashlib.sha256()
    with path.open("rb") as raw:
        reader = ArtifactReader(_HashingReader(raw, file_hash))  # type: ignore[arg-type]
        signed = reader.read_manifest()
        keyid = signed.verify(trusted_keys)
        for entry, stream in reader.payloads():
            decode_payload(entry, stream, _NullSink())  # type: ignore[arg-type]
        # Drain the tar end-of-archive padding so the file hash covers every byte.
        while raw_chunk := raw.read(65536):
            file_hash.update(raw_chunk)
    return VerifiedArtifact(signed, keyid, file_hash.hexdigest(), path.stat().st_size)


class _HashingReader:
    def __init__(self, raw: object, digest: hashlib._Hash) -> None:
        self._raw = raw
        self._digest = digest

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._raw.read(n)  # type: ignore[attr-defined]
        self._digest.update(data)
        return data


__all__ = ["VerifiedArtifact", "build_artifact", "read_manifest", "verify_artifact"]
