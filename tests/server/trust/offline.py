"""The operator's offline side, built directly with ``tuf.api.metadata`` for the server tests.

Independent of ``fleetcast.trust`` (the CLI's tooling): these tests pin the
server to python-tuf's rules and ADR 0008's HTTP contract, not to our own
metadata builder.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Key, SSlibKey
from tuf.api.metadata import (
    Delegations,
    Metadata,
    Root,
    SuccinctRoles,
    TargetFile,
    Targets,
)
from tuf.api.serialization.json import JSONSerializer

from fleetcast.trust import BINS_PREFIX, CUSTOM_KEY, SPEC_VERSION, target_path

#: Few bins keep the tests quick; the layout is the ADR's (8 bits in production).
BIT_LENGTH = 3


def expires(days: float = 365) -> dt.datetime:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).replace(microsecond=0)


def to_bytes(md: Metadata[Any]) -> bytes:
    """Indented, like an operator's files: the server must store and serve them as sent."""
    return md.to_bytes(JSONSerializer(compact=False))


def online_key(body: dict[str, Any]) -> Key:
    """A key of ``GET /api/v1/tuf/online-keys``."""
    fields = {k: v for k, v in body.items() if k != "keyid"}
    return SSlibKey.from_dict(body["keyid"], fields)


def sign(md: Metadata[Any], signers: list[CryptoSigner]) -> Metadata[Any]:
    for signer in signers:
        md.sign(signer, append=True)
    return md


@dataclass
class OfflineKeys:
    """2-of-3 root keys, one targets key: what ``fleetcast keys init`` would create."""

    root: list[CryptoSigner] = field(
        default_factory=lambda: [CryptoSigner.generate_ed25519() for _ in range(3)]
    )
    targets: list[CryptoSigner] = field(default_factory=lambda: [CryptoSigner.generate_ed25519()])
    root_threshold: int = 2

    def image_root(self, online: dict[str, dict[str, Any]], version: int = 1) -> Metadata[Root]:
        root = Root(
            version=version, spec_version=SPEC_VERSION, expires=expires(), consistent_snapshot=True
        )
        for signer in self.root:
            root.add_key(signer.public_key, "root")
        root.roles["root"].threshold = self.root_threshold
        for signer in self.targets:
            root.add_key(signer.public_key, "targets")
        root.add_key(online_key(online["snapshot"]), "snapshot")
        root.add_key(online_key(online["timestamp"]), "timestamp")
        return Metadata(root)

    def director_root(self, online: dict[str, dict[str, Any]], version: int = 1) -> Metadata[Root]:
        root = Root(
            version=version, spec_version=SPEC_VERSION, expires=expires(), consistent_snapshot=True
        )
        for signer in self.root:
            root.add_key(signer.public_key, "root")
        root.roles["root"].threshold = self.root_threshold
        for role in ("targets", "snapshot", "timestamp"):
            root.add_key(online_key(online["director"]), role)
        return Metadata(root)

    def targets_md(self, version: int = 1) -> Metadata[Targets]:
        succinct = SuccinctRoles(
            keyids=[s.public_key.keyid for s in self.targets],
            threshold=len(self.targets),
            bit_length=BIT_LENGTH,
            name_prefix=BINS_PREFIX,
        )
        delegations = Delegations(
            keys={s.public_key.keyid: s.public_key for s in self.targets}, succinct_roles=succinct
        )
        return Metadata(
            Targets(
                version=version,
                spec_version=SPEC_VERSION,
                expires=expires(),
                delegations=delegations,
            )
        )


def empty_bin(version: int = 1) -> Metadata[Targets]:
    return Metadata(Targets(version=version, spec_version=SPEC_VERSION, expires=expires()))


def next_version(md: Metadata[Any]) -> Metadata[Any]:
    """An unsigned copy of ``md`` with version + 1."""
    new: Metadata[Any] = Metadata(copy.deepcopy(md.signed))
    new.signed.version += 1
    return new


def artifact_target(path: Path, name: str, version: str, compatible: list[str]) -> TargetFile:
    """The image target ``fleetcast artifact release`` signs for an artifact file."""
    data = path.read_bytes()
    custom = {
        CUSTOM_KEY: {
            "name": name,
            "version": version,
            "compatible": compatible,
            "release_counter": 1764739200,
            "manifest_sha256": "0" * 64,
        }
    }
    return TargetFile(
        length=len(data),
        hashes={"sha256": hashlib.sha256(data).hexdigest()},
        path=target_path(name, version),
        unrecognized_fields={"custom": custom},
    )
