"""The two TUF repositories as the device sees them: where, how bounded, how anchored.

One :func:`make_updater` builds every ``tuf.ngclient.Updater`` of Fleetcast,
for the image and the director repository of the agent and for the
conformance CLI, with one :data:`UPDATER_CONFIG` and the
:class:`~fleetcast.agent.trust.fetcher.HttpxFetcher`.

Layout on the device: ``<state_dir>/tuf/image/`` and
``<state_dir>/tuf/director/`` hold what python-tuf trusts (non-versioned
``timestamp.json``, ``snapshot.json``, ``targets.json``, delegated roles, and
``root_history/N.root.json`` with ``root.json`` pointing at the newest). The
trust anchor is always the root file shipped on the device (``[trust]
image_root`` / ``director_root``), passed as ``bootstrap``: a damaged or
planted ``root.json`` in the state directory can never replace it, and newer
roots are reached only through the signed chain (cached in ``root_history``,
so the walk costs no download once done). python-tuf writes every file
through a temporary file and ``os.replace``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from fleetcast.agent.client import API_PREFIX
from fleetcast.exceptions import DeviceStateError, UsageError
from fleetcast.trust import DIRECTOR_REPO, IMAGE_REPO

#: Every bound of the TUF client, in one place (python-tuf's defaults, made explicit).
UPDATER_CONFIG: Final = UpdaterConfig(
    max_root_rotations=256,  # root versions walked in one refresh
    max_delegations=32,  # roles visited looking up one target (targets -> one bin)
    root_max_length=512_000,
    timestamp_max_length=16_384,
    # Snapshot and targets lengths are listed by the server (ADR 0008), so
    # these maxima only apply to a repository that leaves them out.
    snapshot_max_length=2_000_000,
    targets_max_length=5_000_000,
    prefix_targets_with_hash=True,
    app_user_agent="fleetcast-agent",
)


def metadata_dir(state_dir: Path, repo: str) -> Path:
    """Where the device keeps the trusted metadata of ``repo`` (``image`` or ``director``)."""
    return state_dir / "tuf" / repo


def metadata_url(server_url: str, repo: str) -> str:
    """The base URL of ``repo``'s metadata on the Fleetcast server."""
    return f"{server_url.rstrip('/')}{API_PREFIX}/tuf/{repo}/"


def read_root(path: Path) -> bytes:
    """The shipped initial root metadata.

    Raises:
        UsageError: the file cannot be read.
    """
    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read TUF root {path}: {e.strerror}") from e


def make_updater(
    directory: Path,
    url: str,
    fetcher: FetcherInterface,
    *,
    bootstrap: bytes | None,
    target_dir: Path | None = None,
    target_base_url: str | None = None,
) -> Updater:
    """An ``Updater`` with Fleetcast's configuration and fetcher.

    Args:
        directory: the trusted metadata directory (created if missing).
        url: the metadata base URL.
        fetcher: the fetcher (:class:`~fleetcast.agent.trust.fetcher.HttpxFetcher`).
        bootstrap: the trust anchor: root metadata bytes; ``None`` trusts the
            cached ``root.json`` (the conformance CLI, whose ``init`` put it there).
        target_dir: where ``download_target`` stores targets (conformance only:
            the agent downloads artifacts itself, resumably).
        target_base_url: where targets are downloaded from (conformance only).

    Raises:
        DeviceStateError: the directory cannot be created.
        tuf.api.exceptions.RepositoryError: the anchor root is invalid.
        OSError: ``bootstrap`` is ``None`` and no ``root.json`` is cached.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeviceStateError(f"cannot create TUF metadata directory {directory}: {e}") from e
    return Updater(
        str(directory),
        url,
        None if target_dir is None else str(target_dir),
        target_base_url,
        fetcher,
        UPDATER_CONFIG,
        bootstrap=bootstrap,
    )


__all__ = [
    "DIRECTOR_REPO",
    "IMAGE_REPO",
    "UPDATER_CONFIG",
    "make_updater",
    "metadata_dir",
    "metadata_url",
    "read_root",
]
