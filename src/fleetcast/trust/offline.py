"""Building and signing the offline TUF metadata of ADR 0008 with python-tuf.

The operator's machine signs four kinds of metadata, the server everything else:

* ``root`` of both repositories: the offline root keys, the image repository's
  offline ``targets`` keys, and the server's online keys (image ``snapshot`` and
  ``timestamp``; the director's ``targets``, ``snapshot`` and ``timestamp`` all
  use the server's ``director`` key). A new root version is signed by a
  threshold of the previous root's keys *and* of its own (:func:`rotate_root`).
* image ``targets``: no targets of its own, a succinct hash-bin delegation
  (``bins-00`` ... ``bins-ff`` for 8 bits) to the targets keys.
* every bin, empty from the start so a lookup never misses one; releasing an
  artifact re-signs one bin (:func:`with_target`).

Functions here take and return ``tuf.api.metadata.Metadata`` objects and do no
I/O; python-tuf's own ``verify_delegate`` decides whether a threshold is met
(:func:`missing_signatures`). Dependency errors are turned into ours:
``ValidationError`` for bad metadata or keys, ``UsageError`` for impossible
requests (a threshold above the number of keys).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from securesystemslib.signer import Key, Signer, SSlibKey
from tuf.api.metadata import (
    Delegations,
    Metadata,
    Role,
    Root,
    Signed,
    SuccinctRoles,
    TargetFile,
    Targets,
)

from fleetcast.exceptions import UsageError, ValidationError
from fleetcast.trust import (
    BINS_PREFIX,
    CUSTOM_KEY,
    DIRECTOR_REPO,
    IMAGE_REPO,
    ONLINE_ROLES,
    SPEC_VERSION,
)

T = TypeVar("T", bound=Signed)

#: Which online key signs which top-level role of each repository.
ONLINE_ROLE_KEYS: dict[str, dict[str, str]] = {
    IMAGE_REPO: {"snapshot": "snapshot", "timestamp": "timestamp"},
    DIRECTOR_REPO: {"targets": "director", "snapshot": "director", "timestamp": "director"},
}


def expiry(days: float, now: datetime | None = None) -> datetime:
    """The expiry ``days`` from ``now`` (UTC, whole seconds)."""
    start = now or datetime.now(UTC)
    return (start + timedelta(days=days)).replace(microsecond=0)


def check_threshold(threshold: int, keys: int, what: str) -> None:
    """Refuse a threshold that no set of ``keys`` keys can meet, or that is below 1.

    Raises:
        UsageError: ``threshold`` is < 1 or > ``keys``.
    """
    if threshold < 1:
        raise UsageError(f"{what} threshold must be at least 1, got {threshold}")
    if threshold > keys:
        raise UsageError(
            f"{what} threshold {threshold} is more than its {keys} key(s): it could never be met"
        )


def _ed25519_key(value: object, where: str) -> Key:
    """A TUF key object (``keytype``, ``scheme``, ``keyval``, optional ``keyid``)."""
    if not isinstance(value, dict):
        raise ValidationError(f"{where}: expected a TUF key object")
    body = {k: v for k, v in value.items() if k != "keyid"}
    if body.get("keytype") != "ed25519" or body.get("scheme") != "ed25519":
        raise ValidationError(f"{where}: only ed25519 keys are used (ADR 0008)")
    keyval = body.get("keyval")
    public = keyval.get("public") if isinstance(keyval, dict) else None
    try:
        raw = bytes.fromhex(str(public))
        # Derive the default key id the way securesystemslib does, unless the
        # server states one: a root must name the key by the server's id.
        derived = SSlibKey.from_crypto(Ed25519PublicKey.from_public_bytes(raw))
    except ValueError as e:
        raise ValidationError(f"{where}: bad ed25519 public key: {e}") from e
    keyid = value.get("keyid", derived.keyid)
    if not isinstance(keyid, str) or not keyid:
        raise ValidationError(f"{where}: bad keyid")
    return SSlibKey(keyid, derived.keytype, derived.scheme, derived.keyval)


@dataclass(frozen=True)
class OnlineKeys:
    """The server's online public keys, as ``GET /api/v1/tuf/online-keys`` returns them.

    Each role maps to a TUF key object. While an online key is being rotated
    (``POST /api/v1/tuf/online-keys/{role}/rotate``) the server may report the
    role as ``{"active": key, "pending": key}``; a new root must list the pending
    key (the server switches to it once that root is uploaded), so that is the
    one kept here.
    """

    snapshot: Key
    timestamp: Key
    director: Key

    def get(self, role: str) -> Key:
        key: Key = getattr(self, role)
        return key

    @classmethod
    def from_dict(cls, data: object) -> OnlineKeys:
        """Raises: ValidationError: a role is missing or not an ed25519 key object."""
        if not isinstance(data, dict):
            raise ValidationError("online keys must be a JSON object")
        pending = data.get("pending") if isinstance(data.get("pending"), dict) else {}
        keys: dict[str, Key] = {}
        for role in ONLINE_ROLES:
            value = data.get(role)
            if isinstance(value, dict) and "keytype" not in value:
                value = value.get("pending") or value.get("active")
            if isinstance(pending, dict) and pending.get(role):
                value = pending[role]
            if value is None:
                raise ValidationError(f"online keys: no {role!r} key")
            keys[role] = _ed25519_key(value, f"online key {role!r}")
        return cls(keys["snapshot"], keys["timestamp"], keys["director"])

    def to_dict(self) -> dict[str, Any]:
        return {
            role: {"keyid": self.get(role).keyid, **self.get(role).to_dict()}
            for role in ONLINE_ROLES
        }


def _root(
    root_keys: Sequence[Key],
    root_threshold: int,
    roles: Mapping[str, tuple[Sequence[Key], int]],
    expires: datetime,
) -> Metadata[Root]:
    root = Root(version=1, spec_version=SPEC_VERSION, expires=expires, consistent_snapshot=True)
    for role, (keys, threshold) in {"root": (root_keys, root_threshold), **roles}.items():
        root.roles[role].threshold = threshold
        for key in keys:
            root.add_key(key, role)
    return Metadata(root)


def image_root(
    root_keys: Sequence[Key],
    root_threshold: int,
    targets_keys: Sequence[Key],
    targets_threshold: int,
    online: OnlineKeys,
    expires: datetime,
) -> Metadata[Root]:
    """Version 1 of the image repository's root (unsigned).

    Raises:
        UsageError: a threshold cannot be met by its keys.
    """
    check_threshold(root_threshold, len(root_keys), "root")
    check_threshold(targets_threshold, len(targets_keys), "targets")
    roles = {"targets": (targets_keys, targets_threshold)}
    for role, online_role in ONLINE_ROLE_KEYS[IMAGE_REPO].items():
        roles[role] = ([online.get(online_role)], 1)
    return _root(root_keys, root_threshold, roles, expires)


def director_root(
    root_keys: Sequence[Key], root_threshold: int, online: OnlineKeys, expires: datetime
) -> Metadata[Root]:
    """Version 1 of the director repository's root (unsigned): the same root keys.

    Raises:
        UsageError: the root threshold cannot be met.
    """
    check_threshold(root_threshold, len(root_keys), "root")
    roles = {
        role: ([online.get(online_role)], 1)
        for role, online_role in ONLINE_ROLE_KEYS[DIRECTOR_REPO].items()
    }
    return _root(root_keys, root_threshold, roles, expires)


def image_targets(
    targets_keys: Sequence[Key], threshold: int, bit_length: int, expires: datetime
) -> Metadata[Targets]:
    """Version 1 of image ``targets``: a succinct delegation to ``2**bit_length`` bins.

    Raises:
        UsageError: bad bit length or threshold.
    """
    if not 1 <= bit_length <= 16:
        # 16 bits is 65536 bins already; python-tuf allows 32 but nobody
        # wants to sign four billion files at ``keys init``.
        raise UsageError(f"--bin-bits must be between 1 and 16, got {bit_length}")
    check_threshold(threshold, len(targets_keys), "targets")
    succinct = SuccinctRoles(
        keyids=[k.keyid for k in targets_keys],
        threshold=threshold,
        bit_length=bit_length,
        name_prefix=BINS_PREFIX,
    )
    delegations = Delegations(keys={k.keyid: k for k in targets_keys}, succinct_roles=succinct)
    targets = Targets(
        version=1, spec_version=SPEC_VERSION, expires=expires, delegations=delegations
    )
    return Metadata(targets)


def succinct_roles(targets: Targets) -> SuccinctRoles:
    """The hash-bin delegation of image ``targets``.

    Raises:
        ValidationError: ``targets`` has no succinct delegation.
    """
    if targets.delegations is None or targets.delegations.succinct_roles is None:
        raise ValidationError("image targets metadata has no succinct hash-bin delegation")
    return targets.delegations.succinct_roles


def empty_bins(targets: Targets, expires: datetime) -> list[Metadata[Targets]]:
    """Version 1 of every bin ``targets`` delegates to, with no targets (unsigned).

    Raises:
        ValidationError: ``targets`` has no succinct delegation.
    """
    return [
        Metadata(Targets(version=1, spec_version=SPEC_VERSION, expires=expires))
        for _ in succinct_roles(targets).get_roles()
    ]


def bin_names(targets: Targets) -> list[str]:
    """The bin role names, in order (``bins-00`` ...).

    Raises:
        ValidationError: ``targets`` has no succinct delegation.
    """
    return list(succinct_roles(targets).get_roles())


def bin_for(targets: Targets, target_path: str) -> str:
    """The bin responsible for ``target_path`` (python-tuf's ``SuccinctRoles``).

    Raises:
        ValidationError: ``targets`` has no succinct delegation.
    """
    return succinct_roles(targets).get_role_for_target(target_path)


def target_entry(
    path: str,
    length: int,
    sha256: str,
    *,
    name: str,
    version: str,
    compatible: Sequence[str],
    release_counter: int,
    manifest_sha256: str,
) -> TargetFile:
    """The image target of one artifact, with Fleetcast's signed ``custom`` (ADR 0008).

    Raises:
        ValidationError: a negative length or counter, or a malformed hash.
    """
    if release_counter < 0:
        raise ValidationError(f"release counter must not be negative, got {release_counter}")
    custom = {
        CUSTOM_KEY: {
            "name": name,
            "version": version,
            "compatible": list(compatible),
            "release_counter": release_counter,
            "manifest_sha256": manifest_sha256,
        }
    }
    try:
        return TargetFile(length, {"sha256": sha256}, path, {"custom": custom})
    except (ValueError, TypeError) as e:
        raise ValidationError(f"bad target entry for {path}: {e}") from e


def with_target(
    bin_md: Metadata[Targets], target: TargetFile, expires: datetime
) -> Metadata[Targets]:
    """A copy of ``bin_md`` with ``target`` added or replaced, version + 1, unsigned."""
    new: Metadata[Targets] = Metadata(copy.deepcopy(bin_md.signed))
    new.signed.targets[target.path] = target
    new.signed.version += 1
    new.signed.expires = expires
    return new


def rotate_root(
    old: Metadata[Root],
    *,
    add_keys: Iterable[Key] = (),
    remove_keyids: Iterable[str] = (),
    threshold: int | None = None,
    online: OnlineKeys | None = None,
    repo: str,
    expires: datetime,
) -> Metadata[Root]:
    """The next root version after ``old`` (unsigned).

    Root keys are added and removed; with ``online`` the online roles are set to
    those keys (an online-key rotation, or a check that they did not change).

    Raises:
        UsageError: removing an unknown key, or a threshold no key set can meet.
    """
    root = copy.deepcopy(old.signed)
    root.version += 1
    root.expires = expires
    for keyid in remove_keyids:
        if keyid not in root.roles["root"].keyids:
            raise UsageError(f"key {keyid} is not a root key of the {repo} repository")
        root.revoke_key(keyid, "root")
    for key in add_keys:
        root.add_key(key, "root")
    if threshold is not None:
        root.roles["root"].threshold = threshold
    check_threshold(root.roles["root"].threshold, len(root.roles["root"].keyids), "root")
    if online is not None:
        for role, online_role in ONLINE_ROLE_KEYS[repo].items():
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            root.add_key(online.get(online_role), role)
    return Metadata(root)


def _delegated(role: str, delegator: Root | Targets) -> Role:
    try:
        return delegator.get_delegated_role(role)
    except ValueError as e:
        raise ValidationError(f"{role} is not delegated by this metadata: {e}") from e


def sign(
    md: Metadata[Any],
    role: str,
    delegators: Sequence[Root | Targets],
    signers: Mapping[str, Signer],
) -> list[str]:
    """Sign ``md`` with each of ``signers`` that a delegator trusts for ``role``.

    Existing signatures by other keys are kept (partial signing by several
    people); a signature by the same key is replaced. Returns the key ids used.

    Raises:
        ValidationError: a delegator does not delegate ``role``.
    """
    wanted: set[str] = set()
    for delegator in delegators:
        wanted.update(_delegated(role, delegator).keyids)
    used = []
    for keyid, signer in sorted(signers.items()):
        if keyid in wanted:
            md.sign(signer, append=True)
            used.append(keyid)
    return used


def missing_signatures(
    md: Metadata[Any], role: str, delegators: Sequence[tuple[str, Root | Targets]]
) -> list[str]:
    """What keeps ``md`` from verifying; empty when every delegator's threshold is met.

    ``delegators`` are (description, delegator) pairs: for a new root, the
    previous root and the new root itself; for targets, the root; for a bin,
    the image targets. The check is python-tuf's ``get_verification_result``
    (what ``verify_delegate`` raises on).

    Raises:
        ValidationError: a delegator does not delegate ``role``.
    """
    problems = []
    payload = md.signed_bytes
    for what, delegator in delegators:
        _delegated(role, delegator)
        result = delegator.get_verification_result(role, payload, md.signatures)
        if not result.verified:
            problems.append(
                f"{role} v{md.signed.version}: {len(result.signed)} of the "
                f"{result.threshold} signatures {what} needs"
            )
    return problems


__all__ = [
    "ONLINE_ROLE_KEYS",
    "OnlineKeys",
    "bin_for",
    "bin_names",
    "check_threshold",
    "director_root",
    "empty_bins",
    "expiry",
    "image_root",
    "image_targets",
    "missing_signatures",
    "rotate_root",
    "sign",
    "succinct_roles",
    "target_entry",
    "with_target",
]
