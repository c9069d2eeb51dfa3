"""Artifacts build, verify and stream; every damaged artifact is refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.artifact import (
    FRAME_SIZE,
    ArtifactReader,
    PayloadDecoder,
    verify_artifact,
)
from fleetcast.exceptions import (
    ArtifactFormatError,
    IntegrityError,
    InvalidDataError,
    SignatureError,
)
from tests.factories import BuiltArtifact, make_artifact, make_image


def test_build_then_verify(artifact_v2: BuiltArtifact, vendor_key: Ed25519PrivateKey) -> None:
    verified = verify_artifact(artifact_v2.path, [vendor_key.public_key()])
    assert verified.signed.manifest.version == "1.1.0"
    assert verified.size == artifact_v2.path.stat().st_size
    payload = verified.signed.manifest.payloads[0]
    assert payload.size == len(artifact_v2.image)


def test_stream_decodes_exact_image(artifact_v2: BuiltArtifact) -> None:
    with artifact_v2.path.open("rb") as fh:
        reader = ArtifactReader(fh)
        reader.read_manifest()
        entry, stream = next(reader.payloads())
        decoder = PayloadDecoder(entry.payload)
        out = bytearray()
        while chunk := stream.read(3000):  # odd chunking crosses frame boundaries
            out += decoder.feed(chunk)
        decoder.finish()
    assert bytes(out) == artifact_v2.image


def test_resume_from_a_frame_boundary(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> None:
    """A download cut mid-payload resumes at the last frame boundary with the same result."""
    image = make_image("2.0.0", size=3 * FRAME_SIZE + 12345)
    art = make_artifact(tmp_path, vendor_key, version="2.0.0", image=image)
    raw = art.path.read_bytes()
    with art.path.open("rb") as fh:
        reader = ArtifactReader(fh)
        reader.read_manifest()
        entry, stream = next(reader.payloads())
        first = PayloadDecoder(entry.payload)
        written = bytearray()
        fed = 0
        while fed < entry.payload.compressed_size // 2:
            chunk = stream.read(4096)
            fed += len(chunk)
            written += first.feed(chunk)
    assert 0 < first.frame_offset < entry.payload.compressed_size
    installed = bytes(written[: first.frame_output])
    resumed = PayloadDecoder(
        entry.payload, start_compressed=first.frame_offset, start_output=first.frame_output
    )
    resumed.rehash_output(installed)
    rest = raw[
        entry.data_offset + first.frame_offset : entry.data_offset + entry.payload.compressed_size
    ]
    out = installed + resumed.feed(rest)
    resumed.finish()
    assert out == image


def test_wrong_key_is_refused(artifact_v2: BuiltArtifact) -> None:
    with pytest.raises(SignatureError):
        verify_artifact(artifact_v2.path, [Ed25519PrivateKey.generate().public_key()])


def test_tampered_payload_is_refused(
    artifact_v2: BuiltArtifact, vendor_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    data = bytearray(artifact_v2.path.read_bytes())
    with artifact_v2.path.open("rb") as fh:
        reader = ArtifactReader(fh)
        reader.read_manifest()
        entry, _ = next(reader.payloads())
    data[entry.data_offset + 100] ^= 0x01
    bad = tmp_path / "tampered.fca"
    bad.write_bytes(bytes(data))
    with pytest.raises(InvalidDataError):
        verify_artifact(bad, [vendor_key.public_key()])


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.05, 0.2, 0.5, 0.9, 0.999])
def test_truncated_artifacts_are_refused(
    artifact_v2: BuiltArtifact, vendor_key: Ed25519PrivateKey, tmp_path: Path, fraction: float
) -> None:
    """Cut anywhere before the last payload byte: refused (tar's trailing padding is optional)."""
    data = artifact_v2.path.read_bytes()
    payload = artifact_v2.signed.manifest.payloads[0]
    with artifact_v2.path.open("rb") as fh:
        reader = ArtifactReader(fh)
        reader.read_manifest()
        entry, _ = next(reader.payloads())
    end = entry.data_offset + payload.compressed_size
    bad = tmp_path / "truncated.fca"
    bad.write_bytes(data[: int(end * fraction)])
    with pytest.raises(InvalidDataError):
        verify_artifact(bad, [vendor_key.public_key()])


def test_not_an_artifact(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> None:
    bad = tmp_path / "junk.fca"
    bad.write_bytes(b"hello world" * 200)
    with pytest.raises(ArtifactFormatError):
        verify_artifact(bad, [vendor_key.public_key()])


def test_extra_member_after_payloads_is_refused(
    artifact_v2: BuiltArtifact, vendor_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    out = io.BytesIO()
    with tarfile.open(artifact_v2.path) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        extra = tarfile.TarInfo("payloads/evil.zst")
        extra.size = 4
        dst.addfile(extra, io.BytesIO(b"evil"))
    bad = tmp_path / "extra.fca"
    bad.write_bytes(out.getvalue())
    with pytest.raises(ArtifactFormatError, match="unexpected member"):
        verify_artifact(bad, [vendor_key.public_key()])


def test_decoder_refuses_endless_data(artifact_v2: BuiltArtifact) -> None:
    """More bytes than the signed compressed size are refused before they are used."""
    with artifact_v2.path.open("rb") as fh:
        reader = ArtifactReader(fh)
        reader.read_manifest()
        entry, stream = next(reader.payloads())
        decoder = PayloadDecoder(entry.payload)
        decoder.feed(stream.read())
    with pytest.raises(IntegrityError, match="more than the signed"):
        decoder.feed(b"\0")
