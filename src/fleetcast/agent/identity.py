"""The device's own key pair: created once, then the device's proof of identity.

On first start the agent generates an Ed25519 key and writes the private half
to ``<state_dir>/device-key.pem`` (PKCS#8, mode 0600, atomically: a power cut
leaves either no key or a complete one). Every later start loads it. The
public half is sent in each ``POST /auth`` and the request body is signed
with the private half, so the server can tell this device from an impostor
that only knows its serial number.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent.atomicfile import write_atomic
from fleetcast.core.signing import private_key_from_pem, private_key_to_pem
from fleetcast.exceptions import DeviceStateError, ValidationError

K = TypeVar("K")

KEY_FILE: Final = "device-key.pem"


def load_or_create_device_key(state_dir: Path) -> Ed25519PrivateKey:
    """Return the device key from ``state_dir``, creating it on first start.

    Raises:
        DeviceStateError: the key file exists but cannot be read or parsed
            (never silently replaced: a new key would make the server see an
            impostor), or the state directory is not writable.
    """
    return load_or_create_key(
        state_dir / KEY_FILE,
        generate=Ed25519PrivateKey.generate,
        to_pem=private_key_to_pem,
        from_pem=private_key_from_pem,
        what="device key",
        if_corrupt="delete it and re-register the device with its new key",
    )


def load_or_create_key(
    path: Path,
    *,
    generate: Callable[[], K],
    to_pem: Callable[[K], bytes],
    from_pem: Callable[[bytes], K],
    what: str,
    if_corrupt: str,
) -> K:
    """A private key the device keeps in ``path``: read it, or create it (0600) once.

    Raises:
        DeviceStateError: the file exists but cannot be read or parsed (never
            silently replaced), or its directory cannot be created.
    """
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DeviceStateError(f"cannot create state directory {path.parent}: {e}") from e
        key = generate()
        write_atomic(path, to_pem(key), mode=0o600)
        return key
    except OSError as e:
        raise DeviceStateError(f"cannot read {what} {path}: {e}") from e
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Tighten rather than refuse: the key is still ours, and a device
        # that refuses to start cannot be updated to fix whatever loosened it.
        path.chmod(0o600)
    try:
        return from_pem(pem)
    except ValidationError as e:
        raise DeviceStateError(
            f"{what} {path} is corrupt ({e}); restore it, or {if_corrupt}"
        ) from e


__all__ = ["KEY_FILE", "load_or_create_device_key", "load_or_create_key"]
