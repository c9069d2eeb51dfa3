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
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent.atomicfile import write_atomic
from fleetcast.core.signing import private_key_from_pem, private_key_to_pem
from fleetcast.exceptions import DeviceStateError, ValidationError

KEY_FILE: Final = "device-key.pem"


def load_or_create_device_key(state_dir: Path) -> Ed25519PrivateKey:
    """Return the device key from ``state_dir``, creating it on first start.

    Raises:
        DeviceStateError: the key file exists but cannot be read or parsed
            (never silently replaced: a new key would make the server see an
            impostor), or the state directory is not writable.
    """
    path = state_dir / KEY_FILE
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DeviceStateError(f"cannot create state directory {state_dir}: {e}") from e
        key = Ed25519PrivateKey.generate()
        write_atomic(path, private_key_to_pem(key), mode=0o600)
        return key
    except OSError as e:
        raise DeviceStateError(f"cannot read device key {path}: {e}") from e
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Tighten rather than refuse: the key is still ours, and a device
        # that refuses to start cannot be updated to fix whatever loosened it.
        path.chmod(0o600)
    try:
        return private_key_from_pem(pem)
    except ValidationError as e:
        raise DeviceStateError(
            f"device key {path} is corrupt ({e}); restore it, or delete it and "
            "re-register the device with its new key"
        ) from e


__all__ = ["KEY_FILE", "load_or_create_device_key"]
