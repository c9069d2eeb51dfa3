"""Ed25519 signatures over canonical bytes.

Keys are identified by a *key id*: the hex sha256 of the raw 32-byte public
key, so a verifier can pick the right trusted key without guessing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleetcast.exceptions import SignatureError, ValidationError


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the key id (hex sha256 of the raw public key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_to_pem(public_key: Ed25519PublicKey) -> str:
    """Encode a public key as SubjectPublicKeyInfo PEM text."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def public_key_from_pem(pem: str | bytes) -> Ed25519PublicKey:
    """Load an Ed25519 public key from PEM.

    Raises:
        ValidationError: the text is not an Ed25519 public key.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise ValidationError(f"not a PEM public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise ValidationError("public key must be Ed25519")
    return key


def private_key_to_pem(private_key: Ed25519PrivateKey) -> bytes:
    """Encode a private key as unencrypted PKCS#8 PEM."""
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_key_from_pem(pem: bytes) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from unencrypted PKCS#8 PEM.

    Raises:
        ValidationError: the data is not an Ed25519 private key.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise ValidationError(f"not a PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ValidationError("private key must be Ed25519")
    return key


@dataclass(frozen=True)
class Signature:
    """One signature: which key made it and the 64 signature bytes (hex on the wire)."""

    keyid: str
    sig: str

    def to_dict(self) -> dict[str, str]:
        return {"keyid": self.keyid, "sig": self.sig}

    @classmethod
    def from_dict(cls, data: object) -> Signature:
        """Raises: ValidationError: not a ``{"keyid", "sig"}`` object of hex strings."""
        if not isinstance(data, dict):
            raise ValidationError("signature must be an object")
        keyid, sig = data.get("keyid"), data.get("sig")
        if not isinstance(keyid, str) or not isinstance(sig, str):
            raise ValidationError("signature needs string fields 'keyid' and 'sig'")
        try:
            bytes.fromhex(sig)
        except ValueError as e:
            raise ValidationError("signature 'sig' must be hex") from e
        return cls(keyid=keyid, sig=sig)


def sign(private_key: Ed25519PrivateKey, message: bytes) -> Signature:
    """Sign ``message`` and return the signature with its key id."""
    return Signature(keyid=key_id(private_key.public_key()), sig=private_key.sign(message).hex())


def verify(
    message: bytes, signatures: list[Signature], trusted: list[Ed25519PublicKey], *, what: str
) -> str:
    """Check that at least one signature over ``message`` is by a trusted key.

    Returns:
        The key id of the key that verified.

    Raises:
        SignatureError: no signature, or none made by a trusted key verifies.
    """
    if not signatures:
        raise SignatureError(f"{what} is not signed")
    by_id = {key_id(key): key for key in trusted}
    for signature in signatures:
        key = by_id.get(signature.keyid)
        if key is None:
            continue
        try:
            key.verify(bytes.fromhex(signature.sig), message)
        except (InvalidSignature, ValueError) as e:
            raise SignatureError(
                f"{what}: signature by key {signature.keyid[:12]} does not verify"
            ) from e
        return signature.keyid
    ids = ", ".join(s.keyid[:12] for s in signatures)
    raise SignatureError(f"{what} is signed only by untrusted keys ({ids})")
