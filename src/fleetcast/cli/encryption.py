"""CLI side of encrypted payloads (ADR 0008): recipients, the content-key file, its upload.

``fleetcast artifact build --encrypt-to GROUP.pub`` (repeatable) wraps the
artifact's content key for each device group into the signed manifest;
``--encrypt-for-devices`` writes the content key to ``OUTPUT.key`` (mode
0600, never overwritten), which ``fleetcast artifact upload FILE
--content-key OUTPUT.key`` sends to the server, which wraps it per device.
The key file is JSON::

    {"format": "fleetcast-content-key-1", "name": "acme-fw", "version": "1.2.0",
     "key_id": "<hex>", "key": "<64 hex>"}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

from fleetcast.artifact import Encryption, read_manifest
from fleetcast.cli._api import ManagementClient
from fleetcast.core.envelope import (
    KEY_SIZE,
    content_key_id,
    x25519_public_from_pem,
)
from fleetcast.core.keyfiles import load_key_files
from fleetcast.core.manifest import Manifest
from fleetcast.exceptions import ApiError, UsageError

KEY_FILE_FORMAT: Final = "fleetcast-content-key-1"


def key_file_for(output: Path) -> Path:
    """Where ``--encrypt-for-devices`` puts the content key of ``output``."""
    return output.with_name(output.name + ".key")


def encryption_options(
    encrypt_to: list[Path], for_devices: bool, output: Path, chunk_size: int | None = None
) -> Encryption | None:
    """The :class:`Encryption` the build flags ask for (None: not encrypted).

    Raises:
        UsageError: a recipient file is unreadable or not an X25519 public key,
            or the content-key file already exists.
    """
    if not encrypt_to and not for_devices:
        if chunk_size is not None:
            raise UsageError("--chunk-size goes with --encrypt-to or --encrypt-for-devices")
        return None
    recipients = load_key_files(
        encrypt_to,
        x25519_public_from_pem,
        what="--encrypt-to",
        kind="an X25519 public key",
        hint=" (make one with `fleetcast keys generate --kind x25519`)",
    )
    if for_devices and key_file_for(output).exists():
        raise UsageError(f"{key_file_for(output)} exists; refusing to overwrite a content key")
    if chunk_size is None:
        return Encryption(recipients=tuple(recipients))
    return Encryption(recipients=tuple(recipients), chunk_size=chunk_size)


def write_content_key(path: Path, encryption: Encryption, manifest: Manifest) -> None:
    """Write the content-key file (0600, never over an existing file).

    Raises:
        UsageError: ``path`` exists.
    """
    data: dict[str, Any] = {
        "format": KEY_FILE_FORMAT,
        "name": manifest.name,
        "version": manifest.version,
        "key_id": encryption.key_id,
        "key": encryption.content_key.hex(),
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise UsageError(f"{path} exists; refusing to overwrite a content key") from e
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_content_key(path: Path, manifest: Manifest | None = None) -> bytes:
    """Read a content-key file; with ``manifest``, check it is that artifact's key.

    Raises:
        UsageError: unreadable, malformed, or the key of another artifact.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read content key {path}: {e.strerror}") from e
    except ValueError as e:
        raise UsageError(f"{path} is not a content-key file: {e}") from e
    raw = data.get("key") if isinstance(data, dict) else None
    try:
        key = bytes.fromhex(raw) if isinstance(raw, str) else b""
    except ValueError:
        key = b""
    if not isinstance(data, dict) or data.get("format") != KEY_FILE_FORMAT or len(key) != KEY_SIZE:
        raise UsageError(f"{path} is not a content-key file ({KEY_FILE_FORMAT})")
    if manifest is not None and manifest.content_key_id != content_key_id(key):
        what = f"{manifest.name} {manifest.version}"
        if manifest.content_key_id is None:
            raise UsageError(f"artifact {what} is not encrypted; it needs no --content-key")
        raise UsageError(f"{path} is not the content key of {what}")
    return key


def upload_content_key(client: ManagementClient, artifact_id: str, key: bytes) -> None:
    """Send the key as raw bytes (not JSON: the audit log records JSON bodies).

    Raises:
        ApiError: the server refused it.
        TransportError: the server could not be reached.
    """
    client.request(
        "PUT",
        f"/artifacts/{artifact_id}/content-key",
        content=key,
        headers={"Content-Type": "application/octet-stream"},
    )


def upload_with_content_key(client: ManagementClient, path: Path, key: bytes) -> Any:
    """Upload the artifact, then its content key; return the artifact.

    When the artifact is already on the server (a repeated command after the
    key upload failed), the key goes to that artifact: the server accepts it
    only if it is the key the stored manifest names.

    Raises:
        ApiError: the server refused the artifact or the key.
        TransportError: the server could not be reached.
    """
    try:
        artifact = client.upload_artifact(path)
    except ApiError as e:
        if e.code != "conflict":
            raise
        manifest = read_manifest(path).manifest
        found = [
            a
            for a in client.get("/artifacts")["items"]
            if a["name"] == manifest.name and a["version"] == manifest.version
        ]
        if not found:
            raise
        artifact = found[0]
    upload_content_key(client, artifact["id"], key)
    return artifact


__all__ = [
    "KEY_FILE_FORMAT",
    "encryption_options",
    "key_file_for",
    "read_content_key",
    "upload_content_key",
    "upload_with_content_key",
    "write_content_key",
]
