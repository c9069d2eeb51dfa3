"""A stand-in for the server's half of the TUF repositories, for the offline-tooling tests.

The operator's key directory holds what is signed offline; a repository also
needs snapshot and timestamp (image) or targets, snapshot and timestamp
(director) signed with the server's online keys. :class:`OnlineSigner` plays
that part with real ed25519 keys, and :func:`updater` runs python-tuf's own
client, ``tuf.ngclient.Updater``, over the files through an in-memory fetcher:
if ngclient accepts the metadata, a device would.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import DownloadHTTPError
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from fleetcast.trust import DIRECTOR_REPO, ONLINE_ROLES
from fleetcast.trust.metadir import MetadataDir, to_bytes
from fleetcast.trust.offline import OnlineKeys

BASE = "http://repo.test/metadata/"


class OnlineSigner:
    """The server's online keys: snapshot, timestamp, director."""

    def __init__(self) -> None:
        self.signers = {role: CryptoSigner.generate_ed25519() for role in ONLINE_ROLES}

    def keys_json(self) -> dict[str, Any]:
        """What ``GET /api/v1/tuf/online-keys`` answers."""
        return {role: s.public_key.to_dict() for role, s in self.signers.items()}

    def keys(self) -> OnlineKeys:
        return OnlineKeys.from_dict(self.keys_json())

    def rotate(self, role: str) -> CryptoSigner:
        self.signers[role] = CryptoSigner.generate_ed25519()
        return self.signers[role]

    def publish(self, repo_dir: Path, version: int = 1) -> dict[str, bytes]:
        """The files a server would serve for the repository in ``repo_dir``.

        ``version`` numbers the snapshot and timestamp: a client that fetched
        version 1 before needs a higher one to see anything new.
        """
        mdir = MetadataDir(repo_dir)
        files: dict[str, bytes] = {}
        for version in mdir.versions("root"):
            files[f"{version}.root.json"] = mdir.file("root", version).read_bytes()
        expires = datetime.now(UTC) + timedelta(days=1)
        meta: dict[str, MetaFile] = {}
        if repo_dir.name == DIRECTOR_REPO:
            targets: Metadata[Targets] = Metadata(Targets(expires=expires))
            targets.sign(self.signers["director"])
            files["1.targets.json"] = to_bytes(targets)
            meta["targets.json"] = MetaFile(1)
            snapshot_key = timestamp_key = self.signers["director"]
        else:
            for role in sorted(mdir.roles() - {"root"}):
                version = mdir.latest_version(role)
                files[f"{version}.{role}.json"] = mdir.file(role, version).read_bytes()
                meta[f"{role}.json"] = MetaFile(version)
            snapshot_key, timestamp_key = self.signers["snapshot"], self.signers["timestamp"]
        snapshot = Metadata(Snapshot(version=version, expires=expires, meta=meta))
        snapshot.sign(snapshot_key)
        files[f"{version}.snapshot.json"] = snapshot_bytes = to_bytes(snapshot)
        timestamp = Metadata(
            Timestamp(
                version=version,
                expires=expires,
                snapshot_meta=MetaFile.from_data(version, snapshot_bytes, ["sha256"]),
            )
        )
        timestamp.sign(timestamp_key)
        files["timestamp.json"] = to_bytes(timestamp)
        return files


class DictFetcher(FetcherInterface):
    """Serves ``files`` under :data:`BASE`; 404 for anything else."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.fetched: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.removeprefix(BASE)
        self.fetched.append(name)
        if name not in self.files:
            raise DownloadHTTPError(f"{name} not found", 404)
        return iter([self.files[name]])


def updater(client_dir: Path, trusted_root: bytes, files: dict[str, bytes]) -> Updater:
    """A python-tuf client that trusts ``trusted_root`` and reads ``files``."""
    client_dir.mkdir(parents=True, exist_ok=True)
    return Updater(
        metadata_dir=str(client_dir),
        metadata_base_url=BASE,
        fetcher=DictFetcher(files),
        bootstrap=trusted_root,
    )
