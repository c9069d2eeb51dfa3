"""The crypto envelope of encrypted payloads (ADR 0008, "Encrypted payloads").

Pure functions and small stream objects over the ``cryptography`` package;
no I/O. Two layers:

**Key wrap.** Each artifact has one *content key* (32 random bytes). It is
wrapped for a recipient's X25519 public key (a device group's or one
device's)::

    shared    = X25519(ephemeral private, recipient public)
    kek       = HKDF-SHA256(shared, salt = ephemeral public ‖ recipient public,
                            info = "fleetcast-key-wrap-v1", 32 bytes)
    wrapped   = AES-256-GCM(kek, nonce = 12 zero bytes, content key)

The nonce can be constant because every ephemeral key gives a fresh
``kek``; the salt binds both public keys into it. A :class:`WrappedKey`
names its recipient by key id (hex sha256 of the raw public key, as for
ed25519 keys in :mod:`fleetcast.core.signing`). After unwrapping, the key
is checked against the signed ``key_id`` of the payloads
(:func:`content_key_id`), so a substituted wrapped key (the per-device one
is not signed) is refused before a byte is downloaded.

**Chunked stream.** A payload member (the zstd stream) is encrypted in
chunks of ``chunk_size`` plaintext bytes; chunk *i* is::

    AES-256-GCM(content key, nonce = nonce_prefix ‖ uint32be(i),
                associated data = payload name ‖ uint32be(i) ‖ final flag)

with the final flag ``0x01`` on the last chunk only (``0x00`` otherwise),
each followed by its 16-byte tag. Every chunk but the last holds exactly
``chunk_size`` plaintext bytes, the last 1..``chunk_size`` (0 only when the
whole plaintext is empty), so the member size alone tells which chunk is the
last: reordered, dropped, truncated or extended chunks fail their tag.
:class:`ChunkDecryptor` returns a chunk's plaintext only after its tag
verified, and can start at any chunk (resuming a download).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fleetcast.exceptions import IntegrityError, ValidationError

ALGORITHM: Final = "aes-256-gcm-chunked"
KEY_SIZE: Final = 32
TAG_SIZE: Final = 16
NONCE_PREFIX_SIZE: Final = 8
DEFAULT_CHUNK_SIZE: Final = 64 * 1024
#: Largest chunk a device accepts: bounds what it buffers before a tag is checked.
MAX_CHUNK_SIZE: Final = 1024 * 1024
MAX_CHUNKS: Final = 2**32
WRAP_INFO: Final = b"fleetcast-key-wrap-v1"
#: The inventory attribute in which a device reports its X25519 public key (64 hex).
X25519_ATTRIBUTE: Final = "fleetcast.x25519"
_KEY_ID_CONTEXT: Final = b"fleetcast-content-key-id-v1\x00"
_WRAP_NONCE: Final = bytes(12)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_HEX96 = re.compile(r"^[0-9a-f]{96}$")


# --------------------------------------------------------------------------- keys


def new_content_key() -> bytes:
    """32 random bytes: the content key of one artifact."""
    return secrets.token_bytes(KEY_SIZE)


def content_key_id(key: bytes) -> str:
    """The public name of a content key (hex sha256 of a domain tag and the key).

    Safe to publish: the key is 256 random bits, so its hash reveals nothing.
    """
    return hashlib.sha256(_KEY_ID_CONTEXT + key).hexdigest()


def x25519_raw(public_key: X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def x25519_key_id(public_key: X25519PublicKey) -> str:
    """A recipient's key id: the hex sha256 of its raw 32-byte public key."""
    return hashlib.sha256(x25519_raw(public_key)).hexdigest()


def x25519_public_from_hex(value: str) -> X25519PublicKey:
    """Raises: ValidationError: not 64 hex digits of a raw X25519 public key."""
    if not isinstance(value, str) or not _HEX64.match(value):
        raise ValidationError("an X25519 public key must be 64 lowercase hex digits")
    return X25519PublicKey.from_public_bytes(bytes.fromhex(value))


def x25519_private_to_pem(key: X25519PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def x25519_public_to_pem(key: X25519PublicKey) -> str:
    """SubjectPublicKeyInfo PEM text."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def x25519_private_from_pem(pem: bytes) -> X25519PrivateKey:
    """Raises: ValidationError: not an unencrypted PKCS#8 X25519 private key."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise ValidationError(f"not a PEM private key: {e}") from e
    if not isinstance(key, X25519PrivateKey):
        raise ValidationError("private key must be X25519")
    return key


def x25519_public_from_pem(pem: bytes) -> X25519PublicKey:
    """Raises: ValidationError: not an X25519 public key in PEM."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise ValidationError(f"not a PEM public key: {e}") from e
    if not isinstance(key, X25519PublicKey):
        raise ValidationError("public key must be X25519")
    return key


@dataclass(frozen=True)
class PayloadEncryption:
    """A manifest payload's ``encryption`` field: how its member is encrypted.

    ``key_id`` names the artifact's content key (:func:`content_key_id`);
    every encrypted payload of an artifact shares it.
    """

    chunk_size: int
    nonce_prefix: str
    key_id: str
    alg: str = ALGORITHM

    _FIELDS: ClassVar[frozenset[str]] = frozenset({"alg", "chunk_size", "nonce_prefix", "key_id"})

    def __post_init__(self) -> None:
        if self.alg != ALGORITHM:
            raise ValidationError(f"encryption: alg must be {ALGORITHM!r}, got {self.alg!r}")
        size = self.chunk_size
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_CHUNK_SIZE:
            raise ValidationError(f"encryption: chunk_size must be an integer 1..{MAX_CHUNK_SIZE}")
        if not isinstance(self.nonce_prefix, str) or not _HEX16.match(self.nonce_prefix):
            raise ValidationError("encryption: nonce_prefix must be 16 lowercase hex digits")
        if not isinstance(self.key_id, str) or not _HEX64.match(self.key_id):
            raise ValidationError("encryption: key_id must be 64 lowercase hex digits")

    @property
    def prefix_bytes(self) -> bytes:
        return bytes.fromhex(self.nonce_prefix)

    @classmethod
    def from_dict(cls, data: object) -> PayloadEncryption:
        """Raises: ValidationError: a field is missing, unknown or invalid."""
        if not isinstance(data, dict):
            raise ValidationError("encryption must be an object")
        unknown = set(data) - cls._FIELDS
        if unknown:
            # An algorithm variant this version cannot decrypt must not pass as this one.
            raise ValidationError(f"encryption: unknown fields {sorted(unknown)}")
        missing = cls._FIELDS - set(data)
        if missing:
            raise ValidationError(f"encryption: missing fields {sorted(missing)}")
        # Types are checked in __post_init__.
        return cls(
            chunk_size=data["chunk_size"],
            nonce_prefix=data["nonce_prefix"],
            key_id=data["key_id"],
            alg=data["alg"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "alg": self.alg,
            "chunk_size": self.chunk_size,
            "nonce_prefix": self.nonce_prefix,
            "key_id": self.key_id,
        }


# --------------------------------------------------------------------------- key wrap


@dataclass(frozen=True)
class WrappedKey:
    """A content key wrapped for one X25519 recipient (hex fields, as on the wire)."""

    recipient: str
    ephemeral: str
    wrapped: str

    _FIELDS: ClassVar[tuple[str, ...]] = ("recipient", "ephemeral", "wrapped")

    def __post_init__(self) -> None:
        for name, pattern in (
            ("recipient", _HEX64),
            ("ephemeral", _HEX64),
            ("wrapped", _HEX96),
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or not pattern.match(value):
                digits = 96 if pattern is _HEX96 else 64
                raise ValidationError(
                    f"wrapped key: {name!r} must be {digits} lowercase hex digits"
                )

    @classmethod
    def from_dict(cls, data: object) -> WrappedKey:
        """Raises: ValidationError: not ``{"recipient", "ephemeral", "wrapped"}`` of hex."""
        if not isinstance(data, dict) or set(data) != set(cls._FIELDS):
            raise ValidationError("wrapped key must be an object of recipient, ephemeral, wrapped")
        return cls(data["recipient"], data["ephemeral"], data["wrapped"])

    def to_dict(self) -> dict[str, Any]:
        return {"recipient": self.recipient, "ephemeral": self.ephemeral, "wrapped": self.wrapped}


def _kek(shared: bytes, ephemeral_raw: bytes, recipient_raw: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=ephemeral_raw + recipient_raw,
        info=WRAP_INFO,
    ).derive(shared)


def wrap_key(
    content_key: bytes, recipient: X25519PublicKey, *, ephemeral: X25519PrivateKey | None = None
) -> WrappedKey:
    """Wrap ``content_key`` for ``recipient``.

    Args:
        content_key: the 32-byte key.
        recipient: the X25519 public key that may unwrap it.
        ephemeral: the sender's one-off key (default: a fresh random one). The
            server passes one derived from a secret, so the same device gets
            byte-identical offers (stable ETags); it must never be reused for
            another content key.

    Raises:
        ValidationError: the content key is not 32 bytes.
    """
    if len(content_key) != KEY_SIZE:
        raise ValidationError(f"a content key is {KEY_SIZE} bytes")
    ephemeral = ephemeral if ephemeral is not None else X25519PrivateKey.generate()
    ephemeral_raw = x25519_raw(ephemeral.public_key())
    recipient_raw = x25519_raw(recipient)
    try:
        shared = ephemeral.exchange(recipient)
    except ValueError as e:  # a low-order point: no shared secret
        raise ValidationError(f"unusable X25519 recipient key: {e}") from e
    kek = _kek(shared, ephemeral_raw, recipient_raw)
    wrapped = AESGCM(kek).encrypt(_WRAP_NONCE, content_key, None)
    return WrappedKey(x25519_key_id(recipient), ephemeral_raw.hex(), wrapped.hex())


def unwrap_key(wrapped: WrappedKey, private_key: X25519PrivateKey) -> bytes:
    """Recover the content key with the recipient's private key.

    Raises:
        IntegrityError: the wrapped key is not for this key, or does not
            authenticate (tampered, or made with another key).
    """
    public = private_key.public_key()
    if wrapped.recipient != x25519_key_id(public):
        raise IntegrityError(
            f"wrapped key is for recipient {wrapped.recipient[:16]}, "
            f"not {x25519_key_id(public)[:16]}"
        )
    ephemeral_raw = bytes.fromhex(wrapped.ephemeral)
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_raw))
        kek = _kek(shared, ephemeral_raw, x25519_raw(public))
        return AESGCM(kek).decrypt(_WRAP_NONCE, bytes.fromhex(wrapped.wrapped), None)
    except (InvalidTag, ValueError) as e:
        raise IntegrityError(
            f"wrapped key for recipient {wrapped.recipient[:16]} does not authenticate"
        ) from e


# --------------------------------------------------------------------------- chunked stream


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(4, "big")


def _associated_data(name: str, index: int, final: bool) -> bytes:
    return name.encode() + index.to_bytes(4, "big") + (b"\x01" if final else b"\x00")


def encrypted_size(plain_size: int, chunk_size: int) -> int:
    """The member size of ``plain_size`` plaintext bytes in chunks of ``chunk_size``."""
    chunks = max(1, -(-plain_size // chunk_size))
    return plain_size + chunks * TAG_SIZE


def chunk_count(member_size: int, chunk_size: int) -> int:
    """How many chunks a member of ``member_size`` bytes holds.

    Raises:
        ValidationError: no chunk layout gives this size (a last chunk shorter
            than a tag, an empty last chunk after full ones, too many chunks).
    """
    if member_size < TAG_SIZE:
        raise ValidationError(f"an encrypted member is at least {TAG_SIZE} bytes")
    full = chunk_size + TAG_SIZE
    count = -(-member_size // full)
    last = member_size - (count - 1) * full
    if last < TAG_SIZE or (last == TAG_SIZE and count > 1):
        raise ValidationError(
            f"{member_size} bytes are not a chunk layout of {chunk_size}-byte chunks"
        )
    if count > MAX_CHUNKS:
        raise ValidationError("an encrypted member has at most 2**32 chunks")
    return count


class ChunkEncryptor:
    """Encrypts one payload's stream; feed plaintext with :meth:`update`, end with :meth:`finalize`.

    A full chunk is emitted only once the next byte shows it is not the last.
    """

    def __init__(self, key: bytes, name: str, *, nonce_prefix: bytes, chunk_size: int) -> None:
        if len(nonce_prefix) != NONCE_PREFIX_SIZE:
            raise ValidationError(f"a nonce prefix is {NONCE_PREFIX_SIZE} bytes")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValidationError(f"chunk_size must be 1..{MAX_CHUNK_SIZE}")
        self._aead = AESGCM(key)
        self._name = name
        self._prefix = nonce_prefix
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        self._index = 0
        self._done = False

    def _seal(self, plain: bytes, final: bool) -> bytes:
        if self._index >= MAX_CHUNKS:
            raise ValidationError("payload too large for its chunk size (2**32 chunks)")
        sealed = self._aead.encrypt(
            _nonce(self._prefix, self._index),
            plain,
            _associated_data(self._name, self._index, final),
        )
        self._index += 1
        return sealed

    def update(self, data: bytes) -> bytes:
        """Take plaintext; return the encrypted chunks now complete (not the last one)."""
        self._buffer += data
        out = bytearray()
        while len(self._buffer) > self._chunk_size:
            out += self._seal(bytes(self._buffer[: self._chunk_size]), final=False)
            del self._buffer[: self._chunk_size]
        return bytes(out)

    def finalize(self) -> bytes:
        """Return the last chunk (final flag set)."""
        if self._done:
            raise ValidationError("finalize() was already called")
        self._done = True
        return self._seal(bytes(self._buffer), final=True)


class ChunkDecryptor:
    """Decrypts one payload member chunk by chunk, never releasing unauthenticated bytes.

    Args:
        key: the content key.
        name: the payload name (part of every chunk's associated data).
        nonce_prefix: the payload's 8-byte nonce prefix.
        chunk_size: plaintext bytes per chunk.
        member_size: the signed size of the whole encrypted member; tells
            which chunk is the last.
        start_chunk: the first chunk fed (resuming a download at a chunk
            boundary); the input then starts at byte
            ``start_chunk * (chunk_size + 16)`` of the member.

    Raises:
        ValidationError: a parameter is out of range.
    """

    def __init__(
        self,
        key: bytes,
        name: str,
        *,
        nonce_prefix: bytes,
        chunk_size: int,
        member_size: int,
        start_chunk: int = 0,
    ) -> None:
        if len(key) != KEY_SIZE:
            raise ValidationError(f"a content key is {KEY_SIZE} bytes")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValidationError(f"chunk_size must be 1..{MAX_CHUNK_SIZE}")
        self._count = chunk_count(member_size, chunk_size)
        if not 0 <= start_chunk < self._count:
            raise ValidationError(f"chunk {start_chunk} is outside the member")
        self._aead = AESGCM(key)
        self._name = name
        self._prefix = nonce_prefix
        self._full = chunk_size + TAG_SIZE
        self._member_size = member_size
        self._index = start_chunk
        self._buffer = bytearray()

    @property
    def finished(self) -> bool:
        """Whether the last chunk was decrypted and verified."""
        return self._index == self._count

    def _expected(self) -> int:
        if self._index == self._count - 1:
            return self._member_size - self._index * self._full
        return self._full

    def update(self, data: bytes) -> bytes:
        """Take member bytes; return the plaintext of every chunk now complete and verified.

        Raises:
            IntegrityError: a chunk's tag does not verify (tampered, reordered,
                truncated or wrong key), or data continues after the last chunk.
        """
        if data and self.finished:
            raise IntegrityError(f"payload {self._name}: data after the last encrypted chunk")
        self._buffer += data
        out = bytearray()
        while not self.finished and len(self._buffer) >= self._expected():
            size = self._expected()
            final = self._index == self._count - 1
            try:
                out += self._aead.decrypt(
                    _nonce(self._prefix, self._index),
                    bytes(self._buffer[:size]),
                    _associated_data(self._name, self._index, final),
                )
            except InvalidTag as e:
                raise IntegrityError(
                    f"payload {self._name}: encrypted chunk {self._index} does not "
                    "authenticate (tampered, reordered, truncated or wrong key)"
                ) from e
            del self._buffer[:size]
            self._index += 1
        if self.finished and self._buffer:
            raise IntegrityError(f"payload {self._name}: data after the last encrypted chunk")
        return bytes(out)


__all__ = [
    "ALGORITHM",
    "DEFAULT_CHUNK_SIZE",
    "KEY_SIZE",
    "MAX_CHUNK_SIZE",
    "NONCE_PREFIX_SIZE",
    "TAG_SIZE",
    "X25519_ATTRIBUTE",
    "ChunkDecryptor",
    "ChunkEncryptor",
    "PayloadEncryption",
    "WrappedKey",
    "chunk_count",
    "content_key_id",
    "encrypted_size",
    "new_content_key",
    "unwrap_key",
    "wrap_key",
    "x25519_key_id",
    "x25519_private_from_pem",
    "x25519_private_to_pem",
    "x25519_public_from_hex",
    "x25519_public_from_pem",
    "x25519_public_to_pem",
    "x25519_raw",
]
