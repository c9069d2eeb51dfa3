"""The operator's offline TUF keys: ed25519 signer files in one key directory.

A key directory (``fleetcast keys init --dir DIR``) holds ``root-<i>.key`` and
``targets-<i>.key``: unencrypted PKCS#8 PEM, mode 0600, written once and never
overwritten. The public half and the key id are derived from the private key
the way python-tuf's ``CryptoSigner`` does, so the key ids in signed metadata
are securesystemslib's default ones. Keys removed from a role by a rotation
stay in the directory: old metadata still names them.

This module imports nothing of the server, the agent or the CLI.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey

from fleetcast.exceptions import UsageError, ValidationError

#: Roles whose private keys the operator keeps offline.
OFFLINE_ROLES: Final = ("root", "targets")

_KEY_FILE = re.compile(r"^(root|targets)-([0-9]+)\.key$")


def write_private_key(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only, never over an existing file.

    Raises:
        UsageError: ``path`` exists, or cannot be created.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise UsageError(f"{path} exists; refusing to overwrite a key") from e
    except OSError as e:
        raise UsageError(f"cannot create key file {path}: {e.strerror}") from e
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def load_signer(path: Path) -> CryptoSigner:
    """Load an ed25519 signer from a PKCS#8 PEM key file.

    Raises:
        UsageError: the file cannot be read.
        ValidationError: it is not an unencrypted ed25519 private key.
    """
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read key file {path}: {e.strerror}") from e
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise ValidationError(f"{path} is not a PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ValidationError(f"{path}: TUF keys must be ed25519")
    return CryptoSigner(key, SSlibKey.from_crypto(key.public_key()))


@dataclass(frozen=True)
class KeyFile:
    """One offline key of a key directory."""

    role: str
    index: int
    path: Path
    signer: CryptoSigner

    @property
    def keyid(self) -> str:
        return self.signer.public_key.keyid


class KeyDir:
    """The ``root-<i>.key`` and ``targets-<i>.key`` files of one directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def keys(self, role: str) -> list[KeyFile]:
        """Every key file of ``role`` in index order.

        Raises:
            UsageError / ValidationError: a key file cannot be read or parsed.
        """
        if role not in OFFLINE_ROLES:
            raise UsageError(f"no offline keys for role {role!r}")
        found: list[KeyFile] = []
        if not self.path.is_dir():
            return found
        for entry in self.path.iterdir():
            match = _KEY_FILE.match(entry.name)
            if match and match.group(1) == role:
                found.append(KeyFile(role, int(match.group(2)), entry, load_signer(entry)))
        return sorted(found, key=lambda k: k.index)

    def signers(self, role: str) -> dict[str, CryptoSigner]:
        """The signers of ``role`` by key id."""
        return {k.keyid: k.signer for k in self.keys(role)}

    def add(self, role: str, signer: CryptoSigner) -> KeyFile:
        """Save ``signer`` as the next ``<role>-<i>.key`` (0600, never over a file).

        Raises:
            UsageError: the file exists or cannot be written.
        """
        existing = self.keys(role)
        index = existing[-1].index + 1 if existing else 1
        path = self.path / f"{role}-{index}.key"
        write_private_key(path, signer.private_bytes)
        return KeyFile(role, index, path, signer)

    def generate(self, role: str) -> KeyFile:
        """Create a new ed25519 key as the next ``<role>-<i>.key``.

        Raises:
            UsageError: the file exists or cannot be written.
        """
        return self.add(role, CryptoSigner.generate_ed25519())


__all__ = ["OFFLINE_ROLES", "KeyDir", "KeyFile", "load_signer", "write_private_key"]
