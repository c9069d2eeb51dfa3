"""Factories for encrypted artifacts (ADR 0008): confidential images and their builds."""

from __future__ import annotations

import random
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.artifact import Encryption, PayloadSource, build_artifact
from tests.factories import BuiltArtifact

#: A plaintext marker: it must never be found in anything a blob store holds.
MARKER = b"ACME-CONFIDENTIAL-FIRMWARE-7f3a"


def secret_image(version: str, size: int) -> bytes:
    """Incompressible bytes with :data:`MARKER` every 4 KiB (zstd keeps it as a literal,
    so an unencrypted artifact shows it)."""
    rng = random.Random(f"secret-{version}")
    out = bytearray()
    while len(out) < size:
        out += MARKER + rng.randbytes(4096 - len(MARKER))
    return bytes(out[:size])


def make_encrypted_artifact(
    directory: Path,
    key: Ed25519PrivateKey,
    encryption: Encryption,
    *,
    name: str = "acme-fw",
    version: str = "1.1.0",
    image: bytes | None = None,
    payload_type: str = "rootfs-image",
    meta: dict[str, str] | None = None,
) -> BuiltArtifact:
    """Build a signed single-payload artifact whose payload is encrypted."""
    directory.mkdir(parents=True, exist_ok=True)
    image = secret_image(version, 256 * 1024) if image is None else image
    payload_file = directory / f"{name}-{version}.payload"
    payload_file.write_bytes(image)
    out = directory / f"{name}-{version}.fca"
    signed = build_artifact(
        out,
        name=name,
        version=version,
        compatible=["acme-gw"],
        payloads=[PayloadSource("rootfs", payload_type, payload_file, dict(meta or {}))],
        key=key,
        encryption=encryption,
    )
    payload_file.unlink()  # only the artifact remains, as on a build server
    return BuiltArtifact(out, signed, image)
