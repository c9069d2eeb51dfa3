"""Factories shared by the test suite: keys, images and signed artifacts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.artifact import PayloadSource, build_artifact
from fleetcast.core.manifest import SignedManifest


def make_image(version: str, size: int = 256 * 1024) -> bytes:
    """A deterministic pseudo-image: different bytes per version, compressible in part."""
    seed = hashlib.sha256(version.encode()).digest()
    block = (seed * (4096 // len(seed) + 1))[:4096]
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest() * 4 + block[:896]
        counter += 1
    return bytes(out[:size])


@dataclass
class BuiltArtifact:
    path: Path
    signed: SignedManifest
    image: bytes


def make_artifact(
    directory: Path,
    key: Ed25519PrivateKey,
    *,
    name: str = "acme-fw",
    version: str = "1.1.0",
    compatible: tuple[str, ...] = ("acme-gw",),
    image: bytes | None = None,
    depends: dict[str, str] | None = None,
    payload_type: str = "rootfs-image",
    meta: dict[str, str] | None = None,
) -> BuiltArtifact:
    """Build a signed single-payload artifact in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    image = make_image(version) if image is None else image
    payload_file = directory / f"{name}-{version}.payload"
    payload_file.write_bytes(image)
    out = directory / f"{name}-{version}.fca"
    signed = build_artifact(
        out,
        name=name,
        version=version,
        compatible=list(compatible),
        payloads=[PayloadSource("rootfs", payload_type, payload_file, dict(meta or {}))],
        key=key,
        depends=depends,
    )
    return BuiltArtifact(out, signed, image)
