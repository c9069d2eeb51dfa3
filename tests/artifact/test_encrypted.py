"""Encrypted artifacts: built, signed, verified with and without the key, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fleetcast.artifact import (
    FRAME_SIZE,
    ArtifactReader,
    Encryption,
    PayloadDecoder,
    PayloadEntry,
    read_manifest,
    resume_offset,
    verify_artifact,
)
from fleetcast.core.envelope import content_key_id, new_content_key, unwrap_key
from fleetcast.core.manifest import Manifest, SignedManifest
from fleetcast.exceptions import IncompatibleError, IntegrityError, ValidationError
from tests.encrypted import MARKER, make_encrypted_artifact, secret_image
from tests.factories import make_artifact


def _entry(path: Path) -> tuple[PayloadEntry, bytes]:
    """The payload entry and its stored member bytes."""
    with path.open("rb") as fh:
        reader = ArtifactReader(fh)
        reader.read_manifest()
        entry, stream = next(reader.payloads())
        return entry, stream.read()


def test_encrypted_artifact_hides_the_image_and_verifies_with_its_key(
    tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """A vendor builds 1.1.0 encrypted. The file never shows the plaintext (an
    unencrypted build does: zstd keeps incompressible data as literals); the signed
    manifest describes the encrypted member and the plaintext; with the content key
    everything verifies, without it only the stored member does."""
    image = secret_image("1.1.0", 300_000)
    plain = make_artifact(tmp_path / "plain", vendor_key, image=image)
    assert MARKER in plain.path.read_bytes()

    encryption = Encryption(chunk_size=4096)
    art = make_encrypted_artifact(tmp_path / "enc", vendor_key, encryption, image=image)
    assert MARKER not in art.path.read_bytes()
    payload = art.signed.manifest.payloads[0]
    assert payload.encryption is not None
    assert payload.encryption.key_id == content_key_id(encryption.content_key)
    assert payload.encryption.chunk_size == 4096
    assert payload.size == len(image)
    assert art.signed.manifest.wrapped_keys is None  # per device: the key stays apart

    trusted = [vendor_key.public_key()]
    full = verify_artifact(art.path, trusted, content_key=encryption.content_key)
    assert full.content_verified
    member_only = verify_artifact(art.path, trusted)
    assert not member_only.content_verified
    with pytest.raises(IntegrityError):
        verify_artifact(art.path, trusted, content_key=new_content_key())


def test_group_recipients_are_wrapped_into_the_signed_manifest(
    tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """--encrypt-to for two groups: the manifest carries one wrapped key per group,
    each unwrapping to the content key, and re-reading it round-trips exactly."""
    groups = [X25519PrivateKey.generate(), X25519PrivateKey.generate()]
    encryption = Encryption(recipients=tuple(g.public_key() for g in groups))
    art = make_encrypted_artifact(tmp_path, vendor_key, encryption)
    signed = read_manifest(art.path)
    signed.verify([vendor_key.public_key()])
    wrapped = signed.manifest.wrapped_keys
    assert wrapped is not None and len(wrapped) == 2
    for group, entry in zip(groups, wrapped, strict=True):
        assert unwrap_key(entry, group) == encryption.content_key
    again = Manifest.from_dict(json.loads(signed.signed_bytes))
    assert again.canonical_bytes() == signed.signed_bytes


def test_tampered_encrypted_member_is_refused_even_without_the_key(
    tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """The server holds no group key: it still refuses a member that differs from the
    signed compressed_sha256."""
    art = make_encrypted_artifact(tmp_path, vendor_key, Encryption())
    entry, member = _entry(art.path)
    data = bytearray(art.path.read_bytes())
    data[entry.data_offset + len(member) // 2] ^= 1
    art.path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        verify_artifact(art.path, [vendor_key.public_key()])


def test_decoder_needs_the_key(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> None:
    art = make_encrypted_artifact(tmp_path, vendor_key, Encryption())
    with pytest.raises(IncompatibleError, match="no key to decrypt payload rootfs"):
        PayloadDecoder(art.signed.manifest.payloads[0])


def test_resume_at_every_frame_boundary(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> None:
    """Resume points stay zstd frame boundaries; a resumed decoder starts at the
    encrypted chunk holding the boundary (which never coincides with a chunk end
    here: 1000-byte chunks) and produces exactly the rest of the image."""
    image = secret_image("2.0.0", 3 * FRAME_SIZE + 777)
    encryption = Encryption(chunk_size=1000)
    art = make_encrypted_artifact(tmp_path, vendor_key, encryption, image=image)
    entry, member = _entry(art.path)
    key = encryption.content_key

    decoder = PayloadDecoder(entry.payload, content_key=key)
    boundaries: list[tuple[int, int]] = []
    for i in range(0, len(member), 4096):
        for _ in decoder.decode(member[i : i + 4096]):
            pass
        boundaries.append((decoder.frame_offset, decoder.frame_output))
    decoder.finish()
    points = sorted(set(boundaries))
    assert len([p for p in points if 0 < p[1] < len(image)]) == 2  # inner frame boundaries
    assert points[-1][1] == len(image)  # the very end is a boundary as well

    for start_compressed, start_output in points:
        resumed = PayloadDecoder(
            entry.payload,
            start_compressed=start_compressed,
            start_output=start_output,
            content_key=key,
        )
        resumed.rehash_output(image[:start_output])
        offset = resume_offset(entry.payload, start_compressed)
        assert offset % (1000 + 16) == 0 and offset <= len(member)
        out = b"".join(resumed.feed(member[i : i + 3000]) for i in range(offset, len(member), 3000))
        resumed.finish()
        assert out == image[start_output:]


def test_manifest_validation_of_encryption_fields(
    tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """A member size no chunk layout gives, wrapped keys without encryption, and
    two content keys in one artifact are refused when the manifest is parsed."""
    art = make_encrypted_artifact(tmp_path, vendor_key, Encryption(recipients=()))
    data = json.loads(art.signed.signed_bytes)

    broken = json.loads(json.dumps(data))
    broken["payloads"][0]["compressed_size"] = 15
    with pytest.raises(ValidationError, match="compressed_size"):
        Manifest.from_dict(broken)

    plain = make_artifact(tmp_path / "plain", vendor_key)
    unencrypted = json.loads(plain.signed.signed_bytes)
    group = X25519PrivateKey.generate()
    other = make_encrypted_artifact(
        tmp_path / "g", vendor_key, Encryption(recipients=(group.public_key(),))
    )
    unencrypted["wrapped_keys"] = json.loads(other.signed.signed_bytes)["wrapped_keys"]
    with pytest.raises(ValidationError, match="wrapped_keys without"):
        Manifest.from_dict(unencrypted)

    two = json.loads(json.dumps(data))
    second = json.loads(json.dumps(data["payloads"][0]))
    second["name"] = "second"
    second["type"] = "files"
    second["encryption"]["key_id"] = "0" * 64
    two["payloads"][0]["type"] = "files"
    two["payloads"].append(second)
    with pytest.raises(ValidationError, match="share one content key"):
        Manifest.from_dict(two)


def test_unencrypted_manifests_keep_their_exact_form(
    tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """Typed encryption fields add nothing to manifests that do not use them."""
    plain = make_artifact(tmp_path, vendor_key)
    data = json.loads(plain.signed.signed_bytes)
    assert "wrapped_keys" not in data and "encryption" not in data["payloads"][0]
    assert SignedManifest.from_dict(plain.signed.to_dict()).manifest.canonical_bytes() == (
        plain.signed.signed_bytes
    )


def test_resume_exactly_at_the_end_of_a_full_last_chunk(
    tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """A checkpoint can land on the very end of the payload. When the zstd stream
    fills its last chunk exactly, the resume re-reads that chunk and drops it all."""
    image = secret_image("3.0.0", 200_000)
    zstd_size = (
        make_artifact(tmp_path / "plain", vendor_key, image=image)
        .signed.manifest.payloads[0]
        .compressed_size
    )
    encryption = Encryption(chunk_size=zstd_size)  # one chunk, exactly full
    art = make_encrypted_artifact(tmp_path / "enc", vendor_key, encryption, image=image)
    entry, member = _entry(art.path)
    assert resume_offset(entry.payload, zstd_size) == 0
    resumed = PayloadDecoder(
        entry.payload,
        start_compressed=zstd_size,
        start_output=len(image),
        content_key=encryption.content_key,
    )
    resumed.rehash_output(image)
    assert resumed.feed(member) == b""
    resumed.finish()
