"""What the operator's offline commands do with a key directory, without any network.

A key directory ``DIR`` holds the offline keys (:mod:`fleetcast.trust.keys`)
and the metadata they signed (:mod:`fleetcast.trust.metadir`)::

    DIR/root-1.key ... root-N.key, targets-1.key ...
    DIR/image/1.root.json 1.targets.json 1.bins-00.json ... 1.bins-ff.json
    DIR/director/1.root.json

The CLI adds the server: it fetches the online keys and current bins, and
uploads what :func:`upload_plan` lists. Every function here either completes
or leaves the directory as it was: :func:`init_dir` builds in a temporary
sibling directory and renames it into place; the others check thresholds
before they write a key or a file.

Signing follows python-tuf's threshold rules: metadata is signed with every
key of ``DIR`` its delegator trusts; when that is not enough (keys held by
other people) the caller may ask for a *partial* result, which is written for
``fleetcast tuf sign`` to complete and is never uploaded before it verifies.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, Root, TargetFile, Targets

from fleetcast.exceptions import UsageError, ValidationError
from fleetcast.trust import BINS_PREFIX, DIRECTOR_REPO, IMAGE_REPO, REPOS
from fleetcast.trust.keys import KeyDir, load_signer
from fleetcast.trust.metadir import MetadataDir, load_file, parse_name
from fleetcast.trust.offline import (
    OnlineKeys,
    bin_for,
    bin_names,
    check_threshold,
    director_root,
    empty_bins,
    image_root,
    image_targets,
    missing_signatures,
    rotate_root,
    sign,
    with_target,
)


@dataclass(frozen=True)
class InitOptions:
    """The choices of ``fleetcast keys init``."""

    root_keys: int = 3
    root_threshold: int = 2
    targets_keys: int = 1
    targets_threshold: int = 1
    bin_bits: int = 8
    expires: datetime | None = None


@dataclass(frozen=True)
class Written:
    """One metadata file written by a command, and what it still lacks."""

    repo: str
    role: str
    version: int
    path: Path
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing


def _signed_or_refuse(result: Written, partial: bool) -> None:
    if result.missing and not partial:
        raise UsageError(
            "not enough keys in the key directory: "
            + "; ".join(result.missing)
            + " (use --partial to write it for others to sign with `fleetcast tuf sign`)"
        )


def check_init(path: Path, opts: InitOptions) -> None:
    """Refuse what :func:`init_dir` would refuse, before anything is fetched or made.

    Raises:
        UsageError: a threshold cannot be met, bad bin bits, no expiry, or
            ``path`` exists and is not an empty directory.
    """
    if opts.expires is None:
        raise UsageError("an expiry is needed")
    check_threshold(opts.root_threshold, opts.root_keys, "root")
    check_threshold(opts.targets_threshold, opts.targets_keys, "targets")
    if not 1 <= opts.bin_bits <= 16:
        raise UsageError(f"--bin-bits must be between 1 and 16, got {opts.bin_bits}")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{path} exists and is not empty; refusing to touch existing keys")


def init_dir(path: Path, opts: InitOptions, online: OnlineKeys) -> list[Path]:
    """Create a key directory: keys, both roots, image targets and every empty bin.

    Returns the key files created. Nothing is left behind on failure.

    Raises:
        UsageError: a threshold cannot be met, or ``path`` exists and is not empty.
    """
    check_init(path, opts)
    assert opts.expires is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        keys = KeyDir(staging)
        root_files = [keys.generate("root") for _ in range(opts.root_keys)]
        targets_files = [keys.generate("targets") for _ in range(opts.targets_keys)]
        root_signers = {k.keyid: k.signer for k in root_files}
        root_keys = [k.signer.public_key for k in root_files]
        targets_keys = [k.signer.public_key for k in targets_files]

        image = MetadataDir(staging / IMAGE_REPO)
        roots = {
            IMAGE_REPO: image_root(
                root_keys,
                opts.root_threshold,
                targets_keys,
                opts.targets_threshold,
                online,
                opts.expires,
            ),
            DIRECTOR_REPO: director_root(root_keys, opts.root_threshold, online, opts.expires),
        }
        for repo, root in roots.items():
            sign(root, "root", [root.signed], root_signers)
            MetadataDir(staging / repo).write(root, "root")
        targets_signers = {k.keyid: k.signer for k in targets_files}
        targets = image_targets(targets_keys, opts.targets_threshold, opts.bin_bits, opts.expires)
        sign(targets, "targets", [roots[IMAGE_REPO].signed], targets_signers)
        image.write(targets, "targets")
        names = bin_names(targets.signed)
        for name, bin_md in zip(names, empty_bins(targets.signed, opts.expires), strict=True):
            sign(bin_md, name, [targets.signed], targets_signers)
            image.write(bin_md, name)
        if path.exists():
            path.rmdir()  # empty, checked above
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    path.chmod(0o700)
    return [path / f.path.name for f in (*root_files, *targets_files)]


def release(
    path: Path,
    entry: TargetFile,
    *,
    targets: Targets,
    current: Metadata[Targets] | None,
    expires: datetime,
    partial: bool = False,
) -> tuple[Written, Metadata[Targets]]:
    """Add or replace ``entry`` in its bin, bump the version and sign it.

    The caller writes the result (:meth:`MetadataDir.write`) once it is
    uploaded, or at once for an air-gapped release.

    ``current`` is the bin as the server has it (None: use the newest local
    copy). It must verify against ``targets`` and must not be older than the
    local copy, so neither a tampered server copy nor a release still waiting
    for ``fleetcast tuf upload`` gets silently dropped.

    Raises:
        UsageError: the key directory has too few targets keys (and not ``partial``),
            or a newer local bin is not uploaded yet.
        ValidationError: the server's bin does not verify against ``targets``.
    """
    image = MetadataDir(path / IMAGE_REPO)
    role = bin_for(targets, entry.path)
    local_version = image.latest_version(role)
    if current is None:
        current = image.load(role)
    else:
        problems = missing_signatures(current, role, [("the targets delegation", targets)])
        if problems:
            raise ValidationError(
                f"the server's {role} does not verify against your targets metadata: "
                + "; ".join(problems)
            )
        if current.signed.version < local_version:
            raise UsageError(
                f"{image.file(role, local_version)} is newer than the server's "
                f"{role} v{current.signed.version}: upload it first (`fleetcast tuf upload`)"
            )
    new = with_target(current, entry, expires)
    sign(new, role, [targets], KeyDir(path).signers("targets"))
    missing = missing_signatures(new, role, [("the targets delegation", targets)])
    version = new.signed.version
    result = Written(IMAGE_REPO, role, version, image.file(role, version), missing)
    _signed_or_refuse(result, partial)
    return result, new


def rotate(
    path: Path,
    repos: Sequence[str],
    *,
    add_root_keys: int = 0,
    remove_keyids: Sequence[str] = (),
    threshold: int | None = None,
    online: OnlineKeys | None = None,
    expires: datetime,
    partial: bool = False,
) -> tuple[list[Path], list[Written]]:
    """Write root version N+1 of each of ``repos``, signed by the old and new root keys.

    New root keys are created once and added to every repository rotated.
    Returns the new key files and the roots written.

    Raises:
        UsageError: bad arguments, a threshold that cannot be met, or too few
            keys in ``path`` to sign (and not ``partial``).
    """
    if add_root_keys < 0:
        raise UsageError("--add-root-key must not be negative")
    for repo in repos:
        if repo not in REPOS:
            raise UsageError(f"unknown repository {repo!r}: {' or '.join(REPOS)}")
    keys = KeyDir(path)
    new_signers = [CryptoSigner.generate_ed25519() for _ in range(add_root_keys)]
    signers = {**keys.signers("root"), **{s.public_key.keyid: s for s in new_signers}}
    planned: list[tuple[MetadataDir, Metadata[Root], Written]] = []
    for repo in repos:
        mdir = MetadataDir(path / repo)
        old: Metadata[Root] = mdir.load("root")
        new = rotate_root(
            old,
            add_keys=[s.public_key for s in new_signers],
            remove_keyids=[resolve_keyid(k, old.signed, repo) for k in remove_keyids],
            threshold=threshold,
            online=online,
            repo=repo,
            expires=expires,
        )
        if new.signed.roles == old.signed.roles and new.signed.keys == old.signed.keys:
            raise UsageError(f"nothing to rotate in the {repo} root: same keys and thresholds")
        result = sign_root(mdir, old, new, signers, partial=partial)
        planned.append((mdir, new, result))
    created = [keys.add("root", s).path for s in new_signers]
    for mdir, new, _ in planned:
        mdir.write(new, "root")
    return created, [r for _, _, r in planned]


def sign_root(
    mdir: MetadataDir,
    old: Metadata[Root],
    new: Metadata[Root],
    signers: Mapping[str, Signer],
    *,
    partial: bool,
) -> Written:
    """Sign root ``new`` (N+1) with the ``signers`` that root N or N+1 trusts.

    Returns what it would be written as (the caller writes it) and the
    signatures it still lacks: a threshold of root N *and* of N+1.

    Raises:
        UsageError: a threshold is not met and not ``partial``.
    """
    sign(new, "root", [old.signed, new.signed], signers)
    pairs: list[tuple[str, Root | Targets]] = [
        (f"root v{old.signed.version}", old.signed),
        (f"root v{new.signed.version}", new.signed),
    ]
    missing = missing_signatures(new, "root", pairs)
    version = new.signed.version
    result = Written(mdir.path.name, "root", version, mdir.file("root", version), missing)
    _signed_or_refuse(result, partial)
    return result


def resolve_keyid(prefix: str, root: Root, repo: str, role: str = "root") -> str:
    """A key id of ``role`` from its first characters (at least 8), as people type them.

    Raises:
        UsageError: the prefix is shorter than 8 characters or names no single key.
    """
    keyids = root.roles[role].keyids
    matches = [k for k in keyids if k.startswith(prefix.lower())]
    if len(prefix) < 8 or len(matches) != 1:
        raise UsageError(
            f"{prefix!r} names no single {role} key of the {repo} repository "
            f"({role} keys: {', '.join(k[:16] for k in keyids)})"
        )
    return matches[0]


def sign_file(file: Path, key: Path) -> Written:
    """Add the signature of ``key`` to a metadata file of a key directory.

    The file must be ``DIR/<repo>/<version>.<role>.json`` so its delegators
    can be found next to it; the key must be one they trust for the role.

    Raises:
        UsageError: a bad file name, or a key the role does not trust.
        ValidationError: the file or key is malformed.
    """
    version, role = parse_name(file.name)
    mdir = MetadataDir(file.parent)
    md = load_file(file)
    if md.signed.version != version or md.signed.type != _type_of(role):
        raise ValidationError(f"{file} holds {md.signed.type} v{md.signed.version}, not {role}")
    delegators = mdir.delegators(role, version)
    signer = load_signer(key)
    keyid = signer.public_key.keyid
    if not sign(md, role, [d for _, d in delegators], {keyid: signer}):
        raise UsageError(f"{key} (key {keyid[:16]}) is not a key of the {role} role")
    mdir.write(md, role)
    missing = missing_signatures(md, role, delegators)
    return Written(file.parent.name, role, version, file, missing)


def _type_of(role: str) -> str:
    return "targets" if role.startswith(BINS_PREFIX + "-") else role


@dataclass(frozen=True)
class Upload:
    """One file ``fleetcast tuf upload`` sends: ``PUT /api/v1/tuf/<repo>/<role>``."""

    repo: str
    role: str
    version: int
    path: Path


def upload_plan(path: Path, remote_version: Callable[[str, str], int]) -> list[Upload]:
    """The files of ``path`` newer than the server's, in the order the server needs them.

    Image root chain first (the server checks that the first root names its
    online keys), then the director root chain, image targets, bins. For each
    role other than root only the newest local version is sent.
    ``remote_version(repo, role)`` is the server's current version (0: none).

    Raises:
        UsageError: a file to upload lacks signatures, or ``path`` has no metadata.
    """
    plan: list[Upload] = []
    image, director = MetadataDir(path / IMAGE_REPO), MetadataDir(path / DIRECTOR_REPO)
    if not image.versions("root") and not director.versions("root"):
        raise UsageError(f"no metadata in {path} (run `fleetcast keys init --dir {path}`)")
    for repo, mdir in ((IMAGE_REPO, image), (DIRECTOR_REPO, director)):
        remote = remote_version(repo, "root")
        plan += [
            Upload(repo, "root", v, mdir.file("root", v))
            for v in mdir.versions("root")
            if v > remote
        ]
    roles = sorted(image.roles() - {"root"}, key=lambda r: (r != "targets", r))
    targets_remote = None
    for role in roles:
        local = image.latest_version(role)
        if role == "targets":
            remote = targets_remote = remote_version(IMAGE_REPO, role)
        elif targets_remote == 0:
            remote = 0  # a fresh repository: no bin can be there yet
        else:
            remote = remote_version(IMAGE_REPO, role)
        if local > remote:
            plan.append(Upload(IMAGE_REPO, role, local, image.file(role, local)))
    for item in plan:
        mdir = MetadataDir(path / item.repo)
        md = load_file(item.path)
        missing = missing_signatures(md, item.role, mdir.delegators(item.role, item.version))
        if missing:
            raise UsageError(
                f"{item.path} is not signed enough to upload: {'; '.join(missing)} "
                "(add signatures with `fleetcast tuf sign`)"
            )
    return plan


__all__ = [
    "InitOptions",
    "Upload",
    "Written",
    "init_dir",
    "release",
    "resolve_keyid",
    "rotate",
    "sign_file",
    "sign_root",
    "upload_plan",
]
