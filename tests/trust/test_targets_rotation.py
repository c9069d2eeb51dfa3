"""Targets-key rotation: root N+1 re-keys `targets`, then targets and every bin are re-signed.

The key directory of ``conftest.keydir`` has 3 root keys (threshold 2), 2 targets
keys (threshold 1) and 4 bins. python-tuf decides every time whether the result
verifies, and its ngclient plays the device.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, TargetFile, Targets

from fleetcast.exceptions import UsageError, ValidationError
from fleetcast.trust import IMAGE_REPO, target_path
from fleetcast.trust.keys import KeyDir, load_signer
from fleetcast.trust.metadir import MetadataDir
from fleetcast.trust.offline import bin_for, bin_names, expiry, target_entry
from fleetcast.trust.operations import release, sign_file, upload_plan
from fleetcast.trust.rotation import rotate_targets
from tests.trust.tufrepo import OnlineSigner, updater


def _entry(version: str) -> TargetFile:
    content = f"firmware {version}".encode()
    return target_entry(
        target_path("acme-fw", version), len(content), hashlib.sha256(content).hexdigest(),
        name="acme-fw", version=version, compatible=["acme-gw"], release_counter=1,
        manifest_sha256="cd" * 32,
    )  # fmt: skip


def _release(keydir: Path, entry: TargetFile) -> str:
    image = MetadataDir(keydir / IMAGE_REPO)
    written, md = release(
        keydir, entry, targets=image.load("targets").signed, current=None, expires=expiry(10)
    )
    image.write(md, written.role)
    return written.role


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_a_device_walks_to_the_new_root_and_finds_targets_in_re_signed_bins(
    keydir: Path, online: OnlineSigner, tmp_path: Path
) -> None:
    """The operator replaces targets-1 with a new key. A device that trusted root v1
    (and cached the old targets and bin) walks to root v2, accepts targets and bins
    signed by the new keys, and still finds the target released before the rotation;
    a release made afterwards with the new keys is found too."""
    before = _entry("1.0.0")
    old_bin = _release(keydir, before)
    device = tmp_path / "device"
    files = online.publish(keydir / IMAGE_REPO, version=1)
    assert updater(device, files["1.root.json"], files).get_targetinfo(before.path) is not None

    removed = KeyDir(keydir).keys("targets")[0]
    result = rotate_targets(keydir, add_keys=1, remove_keyids=[removed.keyid[:10]],
                            expires=expiry(30))  # fmt: skip
    assert [p.name for p in result.new_keys] == ["targets-3.key"]
    assert result.removed == [(removed.keyid, removed.path)] and removed.path.is_file()
    assert result.complete and result.threshold == 1
    assert [(w.role, w.version) for w in result.written[:2]] == [("root", 2), ("targets", 2)]

    image = MetadataDir(keydir / IMAGE_REPO)
    old_root: Metadata[Root] = image.load("root", 1)
    root: Metadata[Root] = image.load("root")
    targets: Metadata[Targets] = image.load("targets")
    new_keyids = {k.keyid for k in KeyDir(keydir).keys("targets")} - {removed.keyid}
    old_root.signed.verify_delegate("root", root.signed_bytes, root.signatures)
    root.signed.verify_delegate("root", root.signed_bytes, root.signatures)
    assert set(root.signed.roles["targets"].keyids) == new_keyids
    assert removed.keyid not in root.signed.keys
    assert root.signed.roles["root"] == old_root.signed.roles["root"]
    root.signed.verify_delegate("targets", targets.signed_bytes, targets.signatures)
    assert targets.signed.delegations is not None
    assert set(targets.signed.delegations.keys) == new_keyids
    for name in bin_names(targets.signed):
        bin_md: Metadata[Targets] = image.load(name)
        previous: Metadata[Targets] = image.load(name, bin_md.signed.version - 1)
        assert bin_md.signed.targets == previous.signed.targets
        targets.signed.verify_delegate(name, bin_md.signed_bytes, bin_md.signatures)
    assert before.path in image.load(old_bin).signed.targets

    after = _entry("2.0.0")
    _release(keydir, after)
    files = online.publish(keydir / IMAGE_REPO, version=2)
    client = updater(device, (device / "root.json").read_bytes(), files)
    found = client.get_targetinfo(before.path)
    assert found is not None and found.hashes == before.hashes
    assert client.get_targetinfo(after.path) is not None
    assert Metadata.from_bytes((device / "root.json").read_bytes()).signed.version == 2


def test_a_bin_signed_by_a_removed_key_is_refused_by_devices(
    keydir: Path, online: OnlineSigner, tmp_path: Path
) -> None:
    """Whoever still holds the removed targets-1 key signs a bin with a newer version
    listing an evil target: a device refuses the bin, it never sees the target."""
    removed = KeyDir(keydir).keys("targets")[0]
    rotate_targets(keydir, add_keys=1, remove_keyids=[removed.keyid], expires=expiry(30))

    image = MetadataDir(keydir / IMAGE_REPO)
    evil = _entry("6.6.6")
    role = bin_for(image.load("targets").signed, evil.path)
    forged: Metadata[Targets] = image.load(role)
    forged.signed.targets[evil.path] = evil
    forged.signed.version += 1
    forged.signatures.clear()
    forged.sign(load_signer(removed.path))
    served = tmp_path / "served"
    shutil.copytree(keydir / IMAGE_REPO, served / IMAGE_REPO)
    MetadataDir(served / IMAGE_REPO).write(forged, role)

    files = online.publish(served / IMAGE_REPO)
    with pytest.raises(UnsignedMetadataError):
        updater(tmp_path / "device", files["1.root.json"], files).get_targetinfo(evil.path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 3}, "targets threshold 3 is more than its 2 key"),
        ({"threshold": 0}, "targets threshold must be at least 1"),
        ({"remove_keyids": ["all"]}, "names no single targets key"),
        ({"add_keys": -1}, "--add-key must not be negative"),
        ({}, "nothing to rotate"),
        ({"threshold": 1}, "nothing to rotate"),
    ],
)
def test_impossible_rotations_are_refused_and_nothing_is_written(
    keydir: Path, kwargs: dict[str, Any], message: str
) -> None:
    before = _snapshot(keydir)
    with pytest.raises(UsageError, match=message):
        rotate_targets(keydir, expires=expiry(1), **kwargs)
    assert _snapshot(keydir) == before


def test_removing_every_targets_key_is_refused(keydir: Path) -> None:
    """Removing both keys and adding none would leave a role nobody can sign for."""
    before = _snapshot(keydir)
    keyids = [k.keyid for k in KeyDir(keydir).keys("targets")]
    with pytest.raises(UsageError, match="threshold 1 is more than its 0 key"):
        rotate_targets(keydir, remove_keyids=keyids, expires=expiry(1))
    assert _snapshot(keydir) == before


def test_too_few_root_keys_here_then_a_colleague_completes_the_root(
    keydir: Path, tmp_path: Path
) -> None:
    """With one of the three root keys here (threshold 2) the new root cannot be
    signed: refused, nothing written, not even the new key. With --partial the
    root waits for a colleague's `tuf sign`; targets and bins are complete, and
    only then does the upload plan send root, targets and every bin, in order."""
    away = tmp_path / "away"
    away.mkdir()
    for name in ("root-2.key", "root-3.key"):
        shutil.move(keydir / name, away / name)
    before = _snapshot(keydir)
    with pytest.raises(UsageError, match="root: root v2: 1 of the 2 signatures root v1 needs"):
        rotate_targets(keydir, add_keys=1, expires=expiry(5))
    assert _snapshot(keydir) == before

    result = rotate_targets(keydir, add_keys=1, threshold=2, expires=expiry(5), partial=True)
    assert not result.complete and result.targets.complete
    assert all(w.complete for w in result.bins)
    with pytest.raises(UsageError, match="not signed enough to upload"):
        upload_plan(keydir, lambda repo, role: 1)

    assert not sign_file(result.root.path, away / "root-2.key").missing
    plan = upload_plan(keydir, lambda repo, role: 1)
    assert [(u.role, u.version) for u in plan] == [
        ("root", 2), ("targets", 2), *((name, 2) for name in sorted(r.role for r in result.bins))
    ]  # fmt: skip


def test_a_local_bin_that_does_not_verify_is_not_re_signed(keydir: Path) -> None:
    """Someone edited a bin in the key directory (an extra target, no signature):
    re-signing it with the new keys would launder the edit, so the rotation stops."""
    image = MetadataDir(keydir / IMAGE_REPO)
    name = bin_names(image.load("targets").signed)[0]
    tampered: Metadata[Targets] = image.load(name)
    evil = _entry("6.6.6")
    tampered.signed.targets[evil.path] = evil
    image.write(tampered, name)
    before = _snapshot(keydir)
    with pytest.raises(ValidationError, match=f"{name} does not verify"):
        rotate_targets(keydir, add_keys=1, expires=expiry(5))
    assert _snapshot(keydir) == before
