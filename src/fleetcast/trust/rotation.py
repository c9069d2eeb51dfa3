"""Rotating the image repository's offline targets keys (``fleetcast keys rotate-targets``).

The targets keys are named in three places, and all three change together:

1. image ``root`` N+1: its ``targets`` role lists the new keys and threshold.
   Like every new root it is signed by a threshold of root N's keys *and* of
   its own (:func:`fleetcast.trust.operations.sign_root`, as ``rotate-root``
   does). The root keys stay; the director repository, whose ``targets`` role
   is the server's online director key, is not touched.
2. image ``targets`` (version + 1), signed by the new keys, its succinct
   hash-bin delegation naming the new keys and threshold.
3. every bin (version + 1, the same target entries, a fresh expiry), signed by
   the new keys: a client checks each bin against the *current* delegation, so
   a bin still signed by a removed key would be refused.

Workflow of :func:`rotate_targets`: check that the current metadata verifies
(root → targets → each bin, so nothing altered in the key directory gets
re-signed with the new keys), build and sign everything in memory, check
every threshold with python-tuf, and only then write: the new key files, the
bins, ``targets`` and, last, the root. Until that root is written the new
``targets`` and bins verify against nothing in the directory, so an
interrupted run leaves nothing that ``fleetcast tuf upload`` would send.
Removed keys' files stay in the directory (old metadata still names them);
they are simply no longer listed.

Pure metadata functions (:func:`targets_root`, :func:`targets_delegation`,
:func:`resigned_bin`) do no I/O. This module imports nothing of the server,
the agent or the CLI.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Key, Signer
from tuf.api.metadata import Metadata, Root, Targets

from fleetcast.exceptions import UsageError, ValidationError
from fleetcast.trust import IMAGE_REPO
from fleetcast.trust.keys import KeyDir
from fleetcast.trust.metadir import MetadataDir
from fleetcast.trust.offline import (
    bin_names,
    check_threshold,
    missing_signatures,
    rotate_root,
    sign,
    succinct_roles,
)
from fleetcast.trust.operations import Written, resolve_keyid, sign_root


def targets_root(
    old: Metadata[Root],
    *,
    add_keys: Sequence[Key],
    remove_keyids: Sequence[str],
    threshold: int,
    expires: datetime,
) -> Metadata[Root]:
    """Image root N+1 after ``old`` with the ``targets`` role re-keyed (unsigned).

    Root keys, the online roles and every other field stay as they are.

    Raises:
        UsageError: removing a key the role does not list, or a threshold its
            keys cannot meet.
    """
    new = rotate_root(old, repo=IMAGE_REPO, expires=expires)
    root = new.signed
    for keyid in remove_keyids:
        if keyid not in root.roles["targets"].keyids:
            raise UsageError(f"key {keyid} is not a targets key of the image repository")
        # python-tuf drops the key from ``keys`` too when no other role uses it.
        root.revoke_key(keyid, "targets")
    for key in add_keys:
        root.add_key(key, "targets")
    root.roles["targets"].threshold = threshold
    check_threshold(threshold, len(root.roles["targets"].keyids), "targets")
    return new


def targets_delegation(
    old: Metadata[Targets], keys: Sequence[Key], threshold: int, expires: datetime
) -> Metadata[Targets]:
    """Image ``targets`` version + 1 delegating the same hash bins to ``keys`` (unsigned).

    The bin layout (prefix, bit length) and unknown fields are kept.

    Raises:
        ValidationError: ``old`` has no succinct hash-bin delegation.
        UsageError: ``threshold`` cannot be met by ``keys``.
    """
    check_threshold(threshold, len(keys), "targets")
    targets = copy.deepcopy(old.signed)
    succinct = succinct_roles(targets)
    assert targets.delegations is not None  # succinct_roles checked it
    targets.delegations.keys = {k.keyid: k for k in keys}
    succinct.keyids = [k.keyid for k in keys]
    succinct.threshold = threshold
    targets.version += 1
    targets.expires = expires
    return Metadata(targets)


def resigned_bin(old: Metadata[Targets], expires: datetime) -> Metadata[Targets]:
    """A bin's next version: the same entries, a fresh expiry, no signatures yet."""
    signed = copy.deepcopy(old.signed)
    signed.version += 1
    signed.expires = expires
    return Metadata(signed)


@dataclass(frozen=True)
class TargetsRotation:
    """What :func:`rotate_targets` wrote.

    Attributes:
        new_keys: the ``targets-<i>.key`` files created.
        removed: key ids no longer listed, with their file in the key
            directory (None when it is not there); the files are left alone.
        keyids: the targets key ids now listed.
        threshold: the targets threshold now.
        root, targets, bins: the metadata files written and what each lacks.
    """

    new_keys: list[Path]
    removed: list[tuple[str, Path | None]]
    keyids: list[str]
    threshold: int
    root: Written
    targets: Written
    bins: list[Written]

    @property
    def written(self) -> list[Written]:
        return [self.root, self.targets, *self.bins]

    @property
    def complete(self) -> bool:
        return all(w.complete for w in self.written)


def _verified(
    md: Metadata[Any], role: str, what: str, delegator: tuple[str, Root | Targets]
) -> Metadata[Any]:
    """Refuse to re-sign metadata that does not verify as it stands."""
    problems = missing_signatures(md, role, [delegator])
    if problems:
        raise ValidationError(
            f"{what} does not verify against {delegator[0]}: {'; '.join(problems)} "
            "(complete it with `fleetcast tuf sign` first, or restore the key directory)"
        )
    return md


def _refuse_unsigned(written: Sequence[Written]) -> None:
    bins = [w for w in written if w.role.startswith("bins-")]
    lines = [f"{w.role}: {'; '.join(w.missing)}" for w in written if w.missing and w not in bins]
    short = [w for w in bins if w.missing]
    if short:
        lines.append(f"{len(short)} bin(s), e.g. {'; '.join(short[0].missing)}")
    if lines:
        raise UsageError(
            "not enough keys in the key directory: "
            + "; ".join(lines)
            + " (use --partial to write them for others to sign with `fleetcast tuf sign`)"
        )


def rotate_targets(
    path: Path,
    *,
    add_keys: int = 0,
    remove_keyids: Sequence[str] = (),
    threshold: int | None = None,
    expires: datetime,
    partial: bool = False,
) -> TargetsRotation:
    """Re-key the image ``targets`` role: root N+1, ``targets`` and every bin re-signed.

    ``add_keys`` new ed25519 keys are created (as the next ``targets-<i>.key``
    files); ``remove_keyids`` are key ids or their first 8+ characters;
    ``threshold`` defaults to the current one. Nothing is written unless every
    file verifies, or ``partial`` asks to write files still lacking signatures
    of keys held elsewhere.

    Raises:
        UsageError: bad arguments, a threshold that cannot be met, nothing to
            change, a missing file, or too few keys in ``path`` (and not ``partial``).
        ValidationError: the current metadata in ``path`` does not verify.
    """
    if add_keys < 0:
        raise UsageError("--add-key must not be negative")
    image = MetadataDir(path / IMAGE_REPO)
    keydir = KeyDir(path)
    old_root: Metadata[Root] = image.load("root")
    root_label = f"root v{old_root.signed.version}"
    old_targets: Metadata[Targets] = _verified(
        image.load("targets"), "targets", "image targets", (root_label, old_root.signed)
    )
    current = old_root.signed.roles["targets"]
    removed = sorted(
        {resolve_keyid(k, old_root.signed, IMAGE_REPO, "targets") for k in remove_keyids}
    )
    new_signers = [CryptoSigner.generate_ed25519() for _ in range(add_keys)]
    new_threshold = current.threshold if threshold is None else threshold
    kept = [k for k in current.keyids if k not in removed]
    check_threshold(new_threshold, len(kept) + len(new_signers), "targets")
    if not removed and not new_signers and new_threshold == current.threshold:
        raise UsageError("nothing to rotate: same targets keys and threshold")

    old_bins: list[tuple[str, Metadata[Targets]]] = []
    delegation = ("the targets delegation", old_targets.signed)
    for name in bin_names(old_targets.signed):
        if not image.versions(name):
            raise UsageError(f"no {name} metadata in {image.path}: every bin must be re-signed")
        old_bins.append((name, _verified(image.load(name), name, name, delegation)))

    root = targets_root(
        old_root,
        add_keys=[s.public_key for s in new_signers],
        remove_keyids=removed,
        threshold=new_threshold,
        expires=expires,
    )
    root_written = sign_root(image, old_root, root, keydir.signers("root"), partial=True)
    new_root: Root = root.signed
    keys = [new_root.keys[k] for k in new_root.roles["targets"].keyids]
    signers: Mapping[str, Signer] = {
        **keydir.signers("targets"),
        **{s.public_key.keyid: s for s in new_signers},
    }
    targets = targets_delegation(old_targets, keys, new_threshold, expires)
    targets_written = _sign(
        image, targets, "targets", (f"root v{new_root.version}", new_root), signers
    )
    bins: list[tuple[Metadata[Targets], Written]] = []
    for name, old_bin in old_bins:
        new_bin = resigned_bin(old_bin, expires)
        done = _sign(image, new_bin, name, ("the targets delegation", targets.signed), signers)
        bins.append((new_bin, done))
    written = [root_written, targets_written, *(w for _, w in bins)]
    if not partial:
        _refuse_unsigned(written)

    created = [keydir.add("targets", s).path for s in new_signers]
    # Root last: the new targets and bins verify only against it (module docstring).
    for new_bin, done in bins:
        image.write(new_bin, done.role)
    image.write(targets, "targets")
    image.write(root, "root")
    files = {k.keyid: k.path for k in keydir.keys("targets")}
    return TargetsRotation(
        new_keys=created,
        removed=[(k, files.get(k)) for k in removed],
        keyids=[k.keyid for k in keys],
        threshold=new_threshold,
        root=root_written,
        targets=targets_written,
        bins=[w for _, w in bins],
    )


def _sign(
    image: MetadataDir,
    md: Metadata[Targets],
    role: str,
    delegator: tuple[str, Root | Targets],
    signers: Mapping[str, Signer],
) -> Written:
    sign(md, role, [delegator[1]], signers)
    missing = missing_signatures(md, role, [delegator])
    version = md.signed.version
    return Written(IMAGE_REPO, role, version, image.file(role, version), missing)


__all__ = [
    "TargetsRotation",
    "resigned_bin",
    "rotate_targets",
    "targets_delegation",
    "targets_root",
]
