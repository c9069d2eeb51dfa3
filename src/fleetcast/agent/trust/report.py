"""Signed version reports (ADR 0008): what the device runs, bound to a fresh nonce.

The agent's own process builds and sends them, not the TUF child: signing
needs the device's ed25519 key, which stays in the process that owns it (the
child gets only a short-lived bearer token), and it needs nothing of ``tuf``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent.slots import InstalledTarget
from fleetcast.core.canonical import canonical_json
from fleetcast.core.signing import sign


def version_report(
    *,
    device_id: str,
    nonce: str,
    installed: InstalledTarget | None,
    key: Ed25519PrivateKey,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """A version report signed by ``key`` over the canonical JSON of its ``signed`` part.

    Args:
        device_id: this device's id.
        nonce: the nonce the server just issued (single use).
        installed: the TUF target of the running root file system (``None``:
            unknown, e.g. the factory image).
        key: the device key.
        clock: the wall clock (seconds).
    """
    signed = {
        "device_id": device_id,
        "nonce": nonce,
        "time": int(clock()),
        "installed": {
            "target": None if installed is None else installed.path,
            "sha256": None if installed is None else installed.sha256,
            "release_counter": 0 if installed is None else installed.release_counter,
        },
    }
    signature = sign(key, canonical_json(signed))
    return {"signed": signed, "signatures": [signature.to_dict()]}


__all__ = ["version_report"]
