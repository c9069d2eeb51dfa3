"""The device's decryption keys and how it finds an encrypted artifact's content key.

Encrypted payloads (ADR 0008) are decrypted with the artifact's content key,
which reaches a device wrapped for one of its X25519 keys:

- **its own key**: on first start the agent generates an X25519 key and
  writes it to ``<state_dir>/device-x25519.key`` (PKCS#8, mode 0600,
  atomically, like the ed25519 identity key in :mod:`fleetcast.agent.identity`).
  Its public half is reported as the inventory attribute ``fleetcast.x25519``
  (64 hex digits); the server wraps the content key for it in each offer
  (``wrapped_key``, not signed).
- **group keys**: ``decryption_keys = [paths]`` in ``agent.toml`` names group
  private keys; the vendor wrapped the content key for their public halves
  into the signed manifest (``wrapped_keys``).

Whatever the source, the unwrapped key must hash to the signed ``key_id`` of
the payloads (:func:`fleetcast.core.envelope.content_key_id`), so a
substituted per-device key is refused before a byte is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fleetcast.agent.identity import load_or_create_key
from fleetcast.core.envelope import (
    X25519_ATTRIBUTE,
    WrappedKey,
    content_key_id,
    unwrap_key,
    x25519_key_id,
    x25519_private_from_pem,
    x25519_private_to_pem,
    x25519_raw,
)
from fleetcast.core.keyfiles import load_key_files
from fleetcast.core.manifest import Manifest
from fleetcast.exceptions import (
    IncompatibleError,
    IntegrityError,
)

X25519_KEY_FILE: Final = "device-x25519.key"


def load_or_create_x25519_key(state_dir: Path) -> X25519PrivateKey:
    """Return the device's X25519 key from ``state_dir``, creating it on first start.

    Raises:
        DeviceStateError: the key file exists but cannot be read or parsed
            (never silently replaced: content keys already wrapped for it
            would become unusable), or the state directory is not writable.
    """
    return load_or_create_key(
        state_dir / X25519_KEY_FILE,
        generate=X25519PrivateKey.generate,
        to_pem=x25519_private_to_pem,
        from_pem=x25519_private_from_pem,
        what="device decryption key",
        if_corrupt="delete it (a new key is created and reported; artifacts are then "
        "wrapped for it)",
    )


def public_hex(key: X25519PrivateKey) -> str:
    """The value of the ``fleetcast.x25519`` inventory attribute for ``key``."""
    return x25519_raw(key.public_key()).hex()


def load_decryption_keys(paths: Sequence[Path]) -> list[X25519PrivateKey]:
    """Load the group private keys named by ``decryption_keys``.

    Raises:
        UsageError: a file cannot be read or is not an X25519 private key.
    """
    return load_key_files(
        paths, x25519_private_from_pem, what="decryption key", kind="an X25519 private key"
    )


def content_key_for(
    manifest: Manifest,
    wrapped_key: WrappedKey | None,
    keys: Sequence[X25519PrivateKey],
) -> bytes | None:
    """The content key of ``manifest`` (None if nothing in it is encrypted).

    Tries the offer's per-device ``wrapped_key``, then the manifest's
    ``wrapped_keys``, with every key of this device that they name.

    Raises:
        IncompatibleError: nothing is wrapped for any key of this device
            ("no key to decrypt payload X").
        IntegrityError: a wrapped key for this device does not authenticate,
            or unwraps to a key other than the signed ``key_id``.
    """
    key_id = manifest.content_key_id
    if key_id is None:
        return None
    mine = {x25519_key_id(k.public_key()): k for k in keys}
    candidates = [w for w in (wrapped_key, *(manifest.wrapped_keys or ())) if w is not None]
    problems: list[str] = []
    for wrapped in candidates:
        private = mine.get(wrapped.recipient)
        if private is None:
            continue
        try:
            content_key = unwrap_key(wrapped, private)
        except IntegrityError as e:
            problems.append(str(e))
            continue
        if content_key_id(content_key) != key_id:
            problems.append(
                f"key wrapped for {wrapped.recipient[:16]} is not the artifact's "
                f"content key {key_id[:16]}"
            )
            continue
        return content_key
    encrypted = next(p.name for p in manifest.payloads if p.encryption is not None)
    what = f"artifact {manifest.name} {manifest.version}"
    if problems:
        raise IntegrityError(f"{what}: cannot decrypt payload {encrypted}: {'; '.join(problems)}")
    raise IncompatibleError(
        f"{what}: no key to decrypt payload {encrypted} (none of this device's "
        f"{len(mine)} decryption keys is among the {len(candidates)} it is wrapped for)"
    )


__all__ = [
    "X25519_ATTRIBUTE",
    "X25519_KEY_FILE",
    "content_key_for",
    "load_decryption_keys",
    "load_or_create_x25519_key",
    "public_hex",
]
