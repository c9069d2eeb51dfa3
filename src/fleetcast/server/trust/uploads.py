"""Accepting offline-signed metadata: roots of both repositories, image targets and bins.

Each upload is verified with python-tuf (:mod:`fleetcast.server.trust.verify`)
under the repository lock, stored as the exact bytes sent, and, for the image
repository, followed by a new snapshot and timestamp signed online. A root
that lists a pending online key makes it active (:func:`keys.switch_to`);
the image snapshot and timestamp are then re-signed with it at once, and each
device's director metadata on its next fetch (its content names the key).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession
from tuf.api.metadata import Root, Targets

from fleetcast.server.db.trust_models import TufMetadata
from fleetcast.server.errors import NotFoundError, TooLargeError, TufMetadataInvalidError
from fleetcast.server.settings import Settings
from fleetcast.server.trust import keys, online, store, verify
from fleetcast.trust import IMAGE_REPO, REPOS

#: Largest metadata file accepted (a bin listing thousands of targets stays far below).
MAX_METADATA_BYTES: Final = 16 * 1024 * 1024


def check_size(data: bytes) -> None:
    """Raises: TooLargeError: ``data`` is over :data:`MAX_METADATA_BYTES`."""
    if len(data) > MAX_METADATA_BYTES:
        raise TooLargeError(
            f"metadata of {len(data)} bytes is over the {MAX_METADATA_BYTES} byte limit",
            details={"limit": MAX_METADATA_BYTES},
        )


def check_repo(repo: str) -> None:
    """Raises: NotFoundError: ``repo`` is neither ``image`` nor ``director``."""
    if repo not in REPOS:
        raise NotFoundError(f"no repository {repo!r} (image or director)", details={"repo": repo})


async def upload_root(
    session: AsyncSession, repo: str, data: bytes, settings: Settings, now: dt.datetime
) -> TufMetadata:
    """Verify and store a root of ``repo``; switch online keys it newly lists; commit.

    Raises:
        NotFoundError: unknown repository.
        TooLargeError: over the size limit.
        TufMetadataInvalidError: see :func:`verify.check_root` and :func:`verify.online_listing`.
    """
    check_repo(repo)
    check_size(data)
    md = store.parse(data, f"the {repo} root")
    await store.advisory_lock(session, store.REPOSITORY_LOCK)
    previous = await store.latest_metadata(session, repo, "root")
    previous_root = previous.signed if previous is not None else None
    assert previous_root is None or isinstance(previous_root, Root)
    verify.check_root(md, previous_root, repo, now)
    assert isinstance(md.signed, Root)
    server = await keys.online_keys(session, now=now)
    allowed = {
        role: {k.keyid for k in (rk.active, rk.pending) if k is not None}
        for role, rk in server.items()
    }
    listed = verify.online_listing(md.signed, repo, allowed)
    row = store.add(session, repo, "root", md, data, now=now)
    for key_role, keyid in listed.items():
        await keys.switch_to(session, key_role, keyid, now=now)
    if repo == IMAGE_REPO:
        # Whether or not a key changed: what is served must verify under this root.
        await online.sign_snapshot(session, settings, now)
    await session.commit()
    return row


async def upload_image(
    session: AsyncSession, role: str, data: bytes, settings: Settings, now: dt.datetime
) -> TufMetadata:
    """Verify and store image ``targets`` or a bin, then sign snapshot and timestamp; commit.

    Raises:
        TooLargeError: over the size limit.
        TufMetadataInvalidError: no image root (or no targets for a bin) yet, or
            see :func:`verify.check_targets`.
    """
    check_size(data)
    md = store.parse(data, f"image {role}")
    await store.advisory_lock(session, store.REPOSITORY_LOCK)
    delegator_role = "root" if role == "targets" else "targets"
    delegator = await store.latest_metadata(session, IMAGE_REPO, delegator_role)
    if delegator is None:
        raise TufMetadataInvalidError(
            f"upload the image {delegator_role} before {role}",
            details={"missing": delegator_role},
        )
    assert isinstance(delegator.signed, (Root, Targets))
    stored = await store.latest(session, IMAGE_REPO, role)
    verify.check_targets(md, role, delegator.signed, stored.version if stored else None, now)
    row = store.add(session, IMAGE_REPO, role, md, data, now=now)
    await session.flush()
    await online.sign_snapshot(session, settings, now)
    await session.commit()
    return row


async def summary(session: AsyncSession, now: dt.datetime) -> dict[str, Any]:
    """What ``GET /api/v1/tuf`` shows: each repository's state and the online keys."""
    result: dict[str, Any] = {}
    for repo in REPOS:
        files = await store.newest_files(session, repo)
        root_md = await store.latest_metadata(session, repo, "root")
        entry: dict[str, Any] = {"set_up": root_md is not None, "versions": {}}
        if root_md is not None:
            root = root_md.signed
            assert isinstance(root, Root)
            entry["root"] = {
                "version": root.version,
                "expires": root.expires,
                "roles": {
                    name: {"keyids": list(r.keyids), "threshold": r.threshold}
                    for name, r in root.roles.items()
                },
            }
        if repo == IMAGE_REPO:
            entry["versions"] = {role: info.version for role, info in sorted(files.items())}
            bins = {r: i for r, i in files.items() if r.startswith("bins-")}
            entry["bins"] = len(bins)
            entry["targets"] = sum(i.target_count or 0 for i in bins.values())
            for role in ("snapshot", "timestamp"):
                info = files.get(role)
                entry[role] = (
                    None
                    if info is None
                    else {
                        "version": info.version,
                        "expires": info.expires,
                    }
                )
        else:
            entry["versions"] = {"root": files["root"].version} if "root" in files else {}
        result[repo] = entry
    server = await keys.online_keys(session, now=now)
    result["online_keys"] = {
        role: {
            "active": rk.active.keyid,
            "pending": rk.pending.keyid if rk.pending else None,
        }
        for role, rk in server.items()
    }
    await session.commit()  # keys created at first use
    return result


__all__ = ["MAX_METADATA_BYTES", "check_repo", "summary", "upload_image", "upload_root"]
