"""The crypto envelope: X25519 key wrap and the chunked AES-256-GCM stream (ADR 0008)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fleetcast.core.envelope import (
    TAG_SIZE,
    ChunkDecryptor,
    ChunkEncryptor,
    PayloadEncryption,
    WrappedKey,
    chunk_count,
    content_key_id,
    encrypted_size,
    new_content_key,
    unwrap_key,
    wrap_key,
    x25519_key_id,
    x25519_private_from_pem,
    x25519_private_to_pem,
    x25519_public_from_pem,
    x25519_public_to_pem,
)
from fleetcast.exceptions import IntegrityError, InvalidDataError, ValidationError

PREFIX = bytes.fromhex("0011223344556677")
CHUNK = 100


def _encrypt(key: bytes, plain: bytes, *, name: str = "rootfs", chunk: int = CHUNK) -> bytes:
    enc = ChunkEncryptor(key, name, nonce_prefix=PREFIX, chunk_size=chunk)
    # Fed in odd pieces: the layout must not depend on how the input arrives.
    out = b"".join(enc.update(plain[i : i + 37]) for i in range(0, len(plain), 37))
    return out + enc.finalize()


def _decrypt(
    key: bytes, member: bytes, *, name: str = "rootfs", chunk: int = CHUNK, piece: int = 53
) -> bytes:
    dec = ChunkDecryptor(key, name, nonce_prefix=PREFIX, chunk_size=chunk, member_size=len(member))
    out = b"".join(dec.update(member[i : i + piece]) for i in range(0, len(member), piece))
    assert dec.finished
    return out


def _chunks(member: bytes, chunk: int = CHUNK) -> list[bytes]:
    full = chunk + TAG_SIZE
    return [member[i : i + full] for i in range(0, len(member), full)]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK, 5 * CHUNK + 7])
def test_round_trip_and_layout(size: int) -> None:
    """Any plaintext length, the empty one included, comes back exactly, in the
    size the ADR's layout predicts (one tag per chunk, no empty trailing chunk)."""
    key = new_content_key()
    plain = bytes(range(256)) * (size // 256 + 1)
    plain = plain[:size]
    member = _encrypt(key, plain)
    assert len(member) == encrypted_size(size, CHUNK)
    assert chunk_count(len(member), CHUNK) == max(1, -(-size // CHUNK))
    assert _decrypt(key, member) == plain
    assert len(plain) < 16 or plain[:16] not in member


def test_reordered_chunks_fail() -> None:
    """Swapping two chunks: each is authenticated with its index, so the first fails."""
    key = new_content_key()
    chunks = _chunks(_encrypt(key, b"a" * CHUNK + b"b" * CHUNK + b"c" * 10))
    with pytest.raises(IntegrityError, match="chunk 0 does not authenticate"):
        _decrypt(key, chunks[1] + chunks[0] + chunks[2])


def test_dropped_final_chunk_fails() -> None:
    """Cutting the member at a chunk boundary and claiming that as its size: the now
    last chunk was sealed as "not final", so its tag fails."""
    key = new_content_key()
    chunks = _chunks(_encrypt(key, b"x" * (2 * CHUNK + 10)))
    with pytest.raises(IntegrityError, match="chunk 1"):
        _decrypt(key, chunks[0] + chunks[1])


def test_appended_chunk_and_trailing_bytes_fail() -> None:
    """A final chunk followed by more data (a replayed chunk) is refused."""
    key = new_content_key()
    member = _encrypt(key, b"y" * (CHUNK + 5))
    dec = ChunkDecryptor(
        key, "rootfs", nonce_prefix=PREFIX, chunk_size=CHUNK, member_size=len(member)
    )
    dec.update(member)
    with pytest.raises(IntegrityError, match="after the last"):
        dec.update(b"\x00")


def test_flipped_bit_wrong_key_and_other_payload_name_fail() -> None:
    """A flipped bit, another key, or a chunk moved to another payload all fail."""
    key = new_content_key()
    member = bytearray(_encrypt(key, b"z" * 250))
    with pytest.raises(IntegrityError):
        _decrypt(new_content_key(), bytes(member))
    with pytest.raises(IntegrityError):
        _decrypt(key, bytes(member), name="other")
    member[120] ^= 1
    with pytest.raises(IntegrityError, match="chunk 1"):
        _decrypt(key, bytes(member))


def test_nothing_unauthenticated_is_released() -> None:
    """Plaintext leaves the decryptor whole chunks at a time, only after its tag."""
    key = new_content_key()
    member = _encrypt(key, b"q" * (3 * CHUNK))
    dec = ChunkDecryptor(
        key, "rootfs", nonce_prefix=PREFIX, chunk_size=CHUNK, member_size=len(member)
    )
    assert dec.update(member[: CHUNK + TAG_SIZE - 1]) == b""
    assert dec.update(member[CHUNK + TAG_SIZE - 1 : CHUNK + TAG_SIZE]) == b"q" * CHUNK


def test_decryption_can_start_at_any_chunk() -> None:
    """Resuming a download: start at chunk 2 with the member bytes from there on."""
    key = new_content_key()
    plain = bytes(i % 251 for i in range(4 * CHUNK + 3))
    member = _encrypt(key, plain)
    dec = ChunkDecryptor(
        key, "rootfs", nonce_prefix=PREFIX, chunk_size=CHUNK, member_size=len(member), start_chunk=2
    )
    assert dec.update(member[2 * (CHUNK + TAG_SIZE) :]) == plain[2 * CHUNK :]
    assert dec.finished


@pytest.mark.parametrize("size", [0, 15, 16 + CHUNK + 16])
def test_impossible_member_sizes_are_invalid(size: int) -> None:
    """Shorter than a tag, or an empty last chunk after full ones: not our layout."""
    with pytest.raises(ValidationError):
        chunk_count(size, CHUNK)


def test_key_wrap_round_trip_and_recipient_id() -> None:
    """A content key wrapped for a group key comes back with the group's private key."""
    group = X25519PrivateKey.generate()
    key = new_content_key()
    wrapped = wrap_key(key, group.public_key())
    assert wrapped.recipient == x25519_key_id(group.public_key())
    assert unwrap_key(WrappedKey.from_dict(wrapped.to_dict()), group) == key


def test_unwrap_refuses_the_wrong_key_and_tampering() -> None:
    """Another device's key, a flipped bit in the wrapped key or a swapped ephemeral
    key all fail with an InvalidDataError, never a wrong key."""
    group, other = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    wrapped = wrap_key(new_content_key(), group.public_key())
    with pytest.raises(IntegrityError, match="for recipient"):
        unwrap_key(wrapped, other)
    flipped = f"{int(wrapped.wrapped[0], 16) ^ 1:x}" + wrapped.wrapped[1:]
    with pytest.raises(IntegrityError, match="does not authenticate"):
        unwrap_key(WrappedKey(wrapped.recipient, wrapped.ephemeral, flipped), group)
    foreign = wrap_key(new_content_key(), group.public_key())
    with pytest.raises(InvalidDataError):
        unwrap_key(WrappedKey(wrapped.recipient, foreign.ephemeral, wrapped.wrapped), group)


def test_deterministic_ephemeral_gives_identical_wraps() -> None:
    """The server's stable offers: the same ephemeral key gives the same bytes."""
    device, ephemeral = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    key = new_content_key()
    one = wrap_key(key, device.public_key(), ephemeral=ephemeral)
    assert one == wrap_key(key, device.public_key(), ephemeral=ephemeral)
    assert unwrap_key(one, device) == key


def test_key_id_names_the_key_without_revealing_it() -> None:
    key = new_content_key()
    assert content_key_id(key) == content_key_id(bytes(key))
    assert content_key_id(key) != content_key_id(new_content_key())
    assert key.hex() not in content_key_id(key)


def test_pem_round_trip() -> None:
    private = X25519PrivateKey.generate()
    again = x25519_private_from_pem(x25519_private_to_pem(private))
    assert x25519_key_id(again.public_key()) == x25519_key_id(private.public_key())
    public = x25519_public_from_pem(x25519_public_to_pem(private.public_key()).encode())
    assert x25519_key_id(public) == x25519_key_id(private.public_key())
    with pytest.raises(ValidationError):
        x25519_private_from_pem(b"not a key")


@pytest.mark.parametrize(
    "data",
    [
        {"alg": "aes-128-cbc", "chunk_size": 65536, "nonce_prefix": "00" * 8, "key_id": "a" * 64},
        {
            "alg": "aes-256-gcm-chunked",
            "chunk_size": 0,
            "nonce_prefix": "00" * 8,
            "key_id": "a" * 64,
        },
        {
            "alg": "aes-256-gcm-chunked",
            "chunk_size": 2 * 1024 * 1024,
            "nonce_prefix": "00" * 8,
            "key_id": "a" * 64,
        },
        {"alg": "aes-256-gcm-chunked", "chunk_size": 64, "nonce_prefix": "00", "key_id": "a" * 64},
        {"alg": "aes-256-gcm-chunked", "chunk_size": 64, "nonce_prefix": "00" * 8, "key_id": "x"},
        {
            "alg": "aes-256-gcm-chunked",
            "chunk_size": 64,
            "nonce_prefix": "00" * 8,
            "key_id": "a" * 64,
            "mode": "new",
        },
    ],
)
def test_encryption_field_is_validated(data: dict[str, object]) -> None:
    """Unknown algorithms, chunks over 1 MiB (bounded memory), malformed hex and
    unknown fields are refused rather than half understood."""
    with pytest.raises(ValidationError):
        PayloadEncryption.from_dict(data)
