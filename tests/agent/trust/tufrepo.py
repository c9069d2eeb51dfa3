"""In-memory TUF repositories, built with ``tuf.api.metadata``, that a test can tamper with.

:class:`TufRepo` is one repository as a Fleetcast server serves it (ADR
0008): consistent snapshots, ed25519 keys, snapshot and timestamp listing
lengths and hashes, and (for the image repository) succinct hash-bin
delegations from ``targets`` to ``bins-*``. Every published file is kept
under the name a client asks for (``N.root.json``, ``timestamp.json``,
``N.snapshot.json``, ``N.targets.json``, ``N.bins-x.json``), so a test can
serve an older one, overwrite one, or sign one with the wrong key.

:class:`Keys` holds the key sets: the offline root and targets keys (two of
two required, so one stolen key is below threshold), and the online
snapshot, timestamp and director keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)

from fleetcast.trust import BINS_PREFIX, SPEC_VERSION

SPEC = SPEC_VERSION
#: Four bins in tests (the server uses 256): enough to exercise the delegation.
TEST_BIN_BITS = 2


def in_days(days: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)


def signer() -> CryptoSigner:
    return CryptoSigner.generate_ed25519()


@dataclass
class Keys:
    """Every key of both repositories (ADR 0008: root keys shared, the rest per repo)."""

    root: list[CryptoSigner] = field(default_factory=lambda: [signer(), signer()])
    root_threshold: int = 2
    targets: list[CryptoSigner] = field(default_factory=lambda: [signer(), signer()])
    targets_threshold: int = 2
    snapshot: CryptoSigner = field(default_factory=signer)
    timestamp: CryptoSigner = field(default_factory=signer)
    director: CryptoSigner = field(default_factory=signer)


def _meta(md: Metadata[Any], raw: bytes) -> MetaFile:
    return MetaFile(
        version=md.signed.version,
        length=len(raw),
        hashes={"sha256": hashlib.sha256(raw).hexdigest()},
    )


class TufRepo:
    """One repository: ``image`` (offline targets keys, hash bins) or ``director``.

    Args:
        kind: ``"image"`` or ``"director"``.
        keys: the key sets.
    """

    def __init__(self, kind: str, keys: Keys) -> None:
        self.kind = kind
        self.keys = keys
        self.files: dict[str, bytes] = {}
        root = Root(expires=in_days(365), consistent_snapshot=True, spec_version=SPEC)
        self.root: Metadata[Root] = Metadata(root)
        self.root_signers: list[CryptoSigner] = list(keys.root)
        self.set_role_keys("root", keys.root, keys.root_threshold)
        if kind == "image":
            self.set_role_keys("targets", keys.targets, keys.targets_threshold)
            self.set_role_keys("snapshot", [keys.snapshot], 1)
            self.set_role_keys("timestamp", [keys.timestamp], 1)
        else:
            for role in ("targets", "snapshot", "timestamp"):
                self.set_role_keys(role, [keys.director], 1)
        self.signers: dict[str, list[CryptoSigner]] = {
            "targets": list(keys.targets) if kind == "image" else [keys.director],
            "snapshot": [keys.snapshot if kind == "image" else keys.director],
            "timestamp": [keys.timestamp if kind == "image" else keys.director],
        }
        self.targets: Metadata[Targets] = Metadata(Targets(expires=in_days(365), spec_version=SPEC))
        self.bins: dict[str, Metadata[Targets]] = {}
        if kind == "image":
            succinct = SuccinctRoles(
                keyids=[],
                threshold=keys.targets_threshold,
                bit_length=TEST_BIN_BITS,
                name_prefix=BINS_PREFIX,
            )
            self.targets.signed.delegations = Delegations(keys={}, succinct_roles=succinct)
            for key in keys.targets:
                self.targets.signed.add_key(key.public_key)
            for name in succinct.get_roles():
                self.bins[name] = Metadata(Targets(expires=in_days(365), spec_version=SPEC))
        self.snapshot: Metadata[Snapshot] = Metadata(
            Snapshot(expires=in_days(7), spec_version=SPEC)
        )
        self.timestamp: Metadata[Timestamp] = Metadata(
            Timestamp(expires=in_days(1), spec_version=SPEC)
        )
        self.publish_root()
        self._dirty = {"targets", *self.bins}
        self.publish(bump=False)

    # ------------------------------------------------------------------ keys and roots

    def set_role_keys(self, role: str, signers: Iterable[CryptoSigner], threshold: int) -> None:
        root = self.root.signed
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        for s in signers:
            root.add_key(s.public_key, role)
        root.roles[role].threshold = threshold

    def publish_root(self, extra_signers: Iterable[CryptoSigner] = ()) -> bytes:
        """Sign the current root with the root keys (and ``extra_signers``); serve it."""
        self.root.signatures.clear()
        seen = set()
        for s in [*self.root_signers, *extra_signers]:
            if s.public_key.keyid not in seen:
                seen.add(s.public_key.keyid)
                self.root.sign(s, append=True)
        raw = self.root.to_bytes()
        self.files[f"{self.root.signed.version}.root.json"] = raw
        return raw

    def rotate_root(
        self,
        *,
        snapshot: CryptoSigner | None = None,
        timestamp: CryptoSigner | None = None,
    ) -> None:
        """Root N+1 with new online keys, signed by the (unchanged) root keys; re-sign all."""
        self.root.signed.version += 1
        if snapshot is not None:
            self.set_role_keys("snapshot", [snapshot], 1)
            self.signers["snapshot"] = [snapshot]
        if timestamp is not None:
            self.set_role_keys("timestamp", [timestamp], 1)
            self.signers["timestamp"] = [timestamp]
        self.publish_root()

    @property
    def initial_root(self) -> bytes:
        return self.files["1.root.json"]

    # ------------------------------------------------------------------ targets

    def bin_for(self, path: str) -> str:
        delegations = self.targets.signed.delegations
        assert delegations is not None and delegations.succinct_roles is not None
        return delegations.succinct_roles.get_role_for_target(path)

    def add_target(self, target: TargetFile) -> None:
        """Add (or replace) a target: in its bin (image) or in ``targets`` (director)."""
        role = self.bin_for(target.path) if self.kind == "image" else "targets"
        md = self.bins[role] if self.kind == "image" else self.targets
        md.signed.targets[target.path] = target
        self._dirty.add(role)

    def clear_targets(self) -> None:
        self.targets.signed.targets.clear()
        self._dirty.add("targets")

    def role(self, name: str) -> Metadata[Targets]:
        return self.targets if name == "targets" else self.bins[name]

    # ------------------------------------------------------------------ publishing

    def sign(self, md: Metadata[Any], signers: Iterable[CryptoSigner]) -> bytes:
        md.signatures.clear()
        for s in signers:
            md.sign(s, append=True)
        return md.to_bytes()

    def publish(
        self,
        *,
        bump: bool = True,
        timestamp_version: int | None = None,
        role_signers: dict[str, list[CryptoSigner]] | None = None,
    ) -> None:
        """Re-sign what changed, then snapshot and timestamp (new versions), and serve them.

        ``role_signers`` signs a changed targets role with other keys (an attack).
        """
        for name in sorted(self._dirty):
            md = self.role(name)
            if bump:
                md.signed.version += 1
            signers = self.signers["targets"] if name == "targets" else self.keys.targets
            signers = (role_signers or {}).get(name, signers)
            self.files[f"{md.signed.version}.{name}.json"] = self.sign(md, signers)
        self._dirty.clear()
        for name in ["targets", *self.bins]:
            md = self.role(name)
            raw = self.files[f"{md.signed.version}.{name}.json"]
            self.snapshot.signed.meta[f"{name}.json"] = _meta(md, raw)
        if bump:
            self.snapshot.signed.version += 1
        raw = self.sign(self.snapshot, self.signers["snapshot"])
        self.files[f"{self.snapshot.signed.version}.snapshot.json"] = raw
        self.timestamp.signed.snapshot_meta = _meta(self.snapshot, raw)
        if timestamp_version is not None:
            self.timestamp.signed.version = timestamp_version
        elif bump:
            self.timestamp.signed.version += 1
        self.files["timestamp.json"] = self.sign(self.timestamp, self.signers["timestamp"])

    def get(self, filename: str) -> bytes | None:
        return self.files.get(filename)


__all__ = ["TEST_BIN_BITS", "Keys", "TufRepo", "in_days", "signer"]
