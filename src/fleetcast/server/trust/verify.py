"""Checks on uploaded offline metadata, by python-tuf's rules (no I/O).

Every refusal is a :class:`TufMetadataInvalidError` (422 ``tuf_metadata_invalid``)
saying what is wrong, so the operator can fix it:

* a root must be ``consistent_snapshot``, use ed25519 keys only, not be
  expired, be signed by a threshold of its own root keys and, unless it is
  the first, be version N+1 signed by a threshold of root N's keys
  (``Root.verify_delegate``); its online roles must each be exactly one of the
  server's online keys (:func:`online_listing`), and no offline role may use one;
* image ``targets`` and bins must be signed by a threshold of their delegator
  (root for ``targets``, the succinct delegation of ``targets`` for a bin),
  be newer than the stored version, not be expired, and a bin may only list
  targets that hash to it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from securesystemslib.exceptions import UnverifiedSignatureError
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, SuccinctRoles, Targets

from fleetcast.server.errors import TufMetadataInvalidError
from fleetcast.server.trust.store import MAX_VERSION
from fleetcast.trust import BINS_PREFIX, DIRECTOR_REPO, IMAGE_REPO

#: Which online key (``tuf_keys.role``) a root must list for each role of each repository.
ONLINE_ROLES_OF: Mapping[str, Mapping[str, str]] = {
    IMAGE_REPO: {"snapshot": "snapshot", "timestamp": "timestamp"},
    DIRECTOR_REPO: {"targets": "director", "snapshot": "director", "timestamp": "director"},
}


def _invalid(message: str, **details: Any) -> TufMetadataInvalidError:
    return TufMetadataInvalidError(message, details=details or None)


def check_type(md: Metadata[Any], expected: str, what: str) -> None:
    """Raises: TufMetadataInvalidError: ``md`` is not of type ``expected``, or its version
    is beyond what the server stores."""
    if md.signed.type != expected:
        raise _invalid(f"{what} must be {expected} metadata, got {md.signed.type}")
    if md.signed.version > MAX_VERSION:
        raise _invalid(f"{what}: version {md.signed.version} is above {MAX_VERSION}")


def check_not_expired(md: Metadata[Any], what: str, now: dt.datetime) -> None:
    """Raises: TufMetadataInvalidError: ``md`` expired already (clients would refuse it)."""
    if md.signed.is_expired(now):
        raise _invalid(
            f"{what} v{md.signed.version} expired at {md.signed.expires.isoformat()}",
            expires=md.signed.expires.isoformat(),
        )


def check_signed(
    md: Metadata[Any], role: str, delegator: Root | Targets, what: str, by: str
) -> None:
    """``md`` meets ``delegator``'s threshold for ``role`` (python-tuf ``verify_delegate``).

    Raises:
        TufMetadataInvalidError: below the threshold, or ``role`` not delegated.
    """
    try:
        delegator.verify_delegate(role, md.signed_bytes, md.signatures)
    except UnsignedMetadataError as e:
        raise _invalid(f"{what} is not signed by a threshold of {by}: {e}") from e
    except (ValueError, UnverifiedSignatureError) as e:
        raise _invalid(f"{what} cannot be verified against {by}: {e}") from e


def check_root(md: Metadata[Root], previous: Root | None, repo: str, now: dt.datetime) -> None:
    """Check an uploaded root against the stored chain (``previous``: the newest stored root).

    Raises:
        TufMetadataInvalidError: see the module docstring.
    """
    check_type(md, "root", f"the {repo} root")
    root = md.signed
    what = f"{repo} root v{root.version}"
    if not root.consistent_snapshot:
        raise _invalid(f"{what} must set consistent_snapshot: true (ADR 0008)")
    for keyid, key in root.keys.items():
        if key.keytype != "ed25519" or key.scheme != "ed25519":
            raise _invalid(
                f"{what}: key {keyid[:16]} is {key.keytype}/{key.scheme}; only ed25519 is used"
            )
    check_not_expired(md, what, now)
    if previous is not None:
        if root.version != previous.version + 1:
            raise _invalid(
                f"{what} does not follow the stored root v{previous.version}: "
                f"expected version {previous.version + 1}",
                stored_version=previous.version,
            )
        check_signed(md, "root", previous, what, f"the keys of root v{previous.version}")
    check_signed(md, "root", root, what, "its own root keys")


def online_listing(root: Root, repo: str, server_keys: Mapping[str, set[str]]) -> dict[str, str]:
    """The online key each online role of ``root`` lists, by online-key role.

    ``server_keys`` are the key ids the server can sign with for each online
    key role (active and pending). Each online role must list exactly one of
    them with threshold 1, the director's three roles the same one, and no
    offline role (root, image targets) may use an online key: the server
    must never be able to sign what the operator signs offline.

    Raises:
        TufMetadataInvalidError: a role lists other keys or none of the server's.
    """
    what = f"{repo} root v{root.version}"
    chosen: dict[str, str] = {}
    for role, key_role in ONLINE_ROLES_OF[repo].items():
        listed = root.roles[role]
        allowed = server_keys.get(key_role, set())
        if listed.threshold != 1 or len(listed.keyids) != 1 or listed.keyids[0] not in allowed:
            raise _invalid(
                f"{what}: role {role} must list exactly the server's online {key_role} key "
                f"with threshold 1 (GET /api/v1/tuf/online-keys), got "
                f"{[k[:16] for k in listed.keyids]} threshold {listed.threshold}",
                role=role,
                expected=sorted(allowed),
            )
        keyid = listed.keyids[0]
        if chosen.setdefault(key_role, keyid) != keyid:
            raise _invalid(f"{what}: the roles signed by the {key_role} key list different keys")
    online = set().union(*server_keys.values()) if server_keys else set()
    for role, listed in root.roles.items():
        if role not in ONLINE_ROLES_OF[repo] and online & set(listed.keyids):
            raise _invalid(f"{what}: the offline role {role} must not use an online key")
    return chosen


def succinct_roles(targets: Targets) -> SuccinctRoles:
    """The hash-bin delegation of image ``targets``.

    Raises:
        TufMetadataInvalidError: it has none, or not with the ``bins`` prefix.
    """
    delegations = targets.delegations
    if delegations is None or delegations.succinct_roles is None:
        raise _invalid("image targets must delegate to hash bins (succinct_roles), ADR 0008")
    succinct = delegations.succinct_roles
    if succinct.name_prefix != BINS_PREFIX:
        raise _invalid(f"hash bins must be named {BINS_PREFIX}-XX, got {succinct.name_prefix}-XX")
    return succinct


def check_targets(
    md: Metadata[Targets],
    role: str,
    delegator: Root | Targets,
    stored_version: int | None,
    now: dt.datetime,
) -> None:
    """Check an uploaded image ``targets`` (delegator: the root) or bin (delegator: targets).

    Raises:
        TufMetadataInvalidError: see the module docstring.
    """
    check_type(md, "targets", f"image {role}")
    what = f"image {role} v{md.signed.version}"
    if role == "targets":
        succinct_roles(md.signed)
        by = "the targets keys of the image root"
    else:
        succinct = succinct_roles(delegator) if isinstance(delegator, Targets) else None
        if succinct is None or not succinct.is_delegated_role(role):
            raise _invalid(f"{role} is not a hash bin the image targets delegate to", role=role)
        if md.signed.delegations is not None:
            raise _invalid(f"{what}: hash bins are terminating and delegate nothing")
        for path in md.signed.targets:
            if succinct.get_role_for_target(path) != role:
                raise _invalid(
                    f"{what}: target {path} belongs in {succinct.get_role_for_target(path)}",
                    target=path,
                )
        by = "the targets keys (hash-bin delegation)"
    if stored_version is not None and md.signed.version <= stored_version:
        raise _invalid(
            f"{what} is not newer than the stored version {stored_version}",
            stored_version=stored_version,
        )
    check_not_expired(md, what, now)
    check_signed(md, role, delegator, what, by)


__all__ = [
    "ONLINE_ROLES_OF",
    "check_not_expired",
    "check_root",
    "check_signed",
    "check_targets",
    "check_type",
    "online_listing",
    "succinct_roles",
]
