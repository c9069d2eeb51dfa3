"""Root rotation: devices walk 1.root.json → 2.root.json; online keys rotate the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tuf.api.exceptions import UnsignedMetadataError

from fleetcast.exceptions import UsageError
from fleetcast.trust import DIRECTOR_REPO, IMAGE_REPO, REPOS
from fleetcast.trust.keys import KeyDir
from fleetcast.trust.metadir import MetadataDir
from fleetcast.trust.offline import expiry
from fleetcast.trust.operations import rotate, sign_file, upload_plan
from tests.trust.tufrepo import OnlineSigner, updater


def _trusted_root_version(client_dir: Path) -> int:
    return int(json.loads((client_dir / "root.json").read_bytes())["signed"]["version"])


def test_a_device_walks_the_rotated_root_chain(
    keydir: Path, online: OnlineSigner, tmp_path: Path
) -> None:
    """The operator adds a root key, removes another and raises the threshold to 3;
    a device that shipped with 1.root.json reaches 2.root.json in both repositories,
    and the removed key's file stays in the key directory."""
    keys = KeyDir(keydir)
    removed = keys.keys("root")[0]
    created, written = rotate(
        keydir, list(REPOS), add_root_keys=1, remove_keyids=[removed.keyid[:12]], threshold=3,
        expires=expiry(30),
    )  # fmt: skip
    assert [p.name for p in created] == ["root-4.key"]
    assert removed.path.is_file()
    assert [(w.repo, w.version, w.complete) for w in written] == [
        (IMAGE_REPO, 2, True), (DIRECTOR_REPO, 2, True)
    ]  # fmt: skip

    for repo in REPOS:
        files = online.publish(keydir / repo)
        client_dir = tmp_path / repo
        updater(client_dir, files["1.root.json"], files).refresh()
        assert _trusted_root_version(client_dir) == 2
        root = MetadataDir(keydir / repo).load("root").signed
        assert removed.keyid not in root.keys and root.roles["root"].threshold == 3
        assert created and len(root.roles["root"].keyids) == 3


def test_rotation_needs_a_threshold_of_the_old_keys(keydir: Path) -> None:
    """With only one of the three old root keys (threshold 2) here, the new root
    cannot be signed: nothing is written, not even the new key, unless partial;
    a partial root is completed by another key holder with `tuf sign`."""
    away = keydir.parent / "away"
    away.mkdir()
    for name in ("root-2.key", "root-3.key"):
        shutil.move(keydir / name, away / name)
    with pytest.raises(UsageError, match="1 of the 2 signatures root v1 needs"):
        rotate(keydir, [IMAGE_REPO], add_root_keys=1, expires=expiry(5))
    assert not (keydir / "root-4.key").exists()
    assert MetadataDir(keydir / IMAGE_REPO).versions("root") == [1]

    _, [written] = rotate(keydir, [IMAGE_REPO], add_root_keys=1, expires=expiry(5), partial=True)
    assert not written.complete
    # root-4 (new) and root-1 (old) signed: the new root's threshold 2 is met, the old one not.
    assert written.missing == ["root v2: 1 of the 2 signatures root v1 needs"]
    assert sign_file(written.path, away / "root-2.key").complete
    plan = upload_plan(keydir, lambda repo, role: 1 if role == "root" else 9)
    assert [(u.repo, u.role, u.version) for u in plan] == [(IMAGE_REPO, "root", 2)]


def test_rotation_refuses_nonsense(keydir: Path) -> None:
    with pytest.raises(UsageError, match="never be met"):
        rotate(keydir, [IMAGE_REPO], threshold=4, expires=expiry(1))
    with pytest.raises(UsageError, match="names no single root key"):
        rotate(keydir, [IMAGE_REPO], remove_keyids=["00000000"], expires=expiry(1))
    with pytest.raises(UsageError, match="nothing to rotate"):
        rotate(keydir, [IMAGE_REPO], expires=expiry(1))
    with pytest.raises(UsageError, match="unknown repository"):
        rotate(keydir, ["mirror"], add_root_keys=1, expires=expiry(1))
    assert MetadataDir(keydir / IMAGE_REPO).versions("root") == [1]
    assert len(KeyDir(keydir).keys("root")) == 3


def test_an_online_key_rotation_takes_effect_with_the_new_root(
    keydir: Path, online: OnlineSigner, tmp_path: Path
) -> None:
    """The server makes a new timestamp key; until a root lists it, devices refuse
    timestamps it signs; the operator signs root 2 listing it, and devices accept
    them again while the old key's timestamps are refused."""
    old_timestamp = online.signers["timestamp"]
    online.rotate("timestamp")
    files = online.publish(keydir / IMAGE_REPO)
    with pytest.raises(UnsignedMetadataError):
        updater(tmp_path / "before", files["1.root.json"], files).refresh()

    rotate(keydir, [IMAGE_REPO], online=online.keys(), expires=expiry(30))
    files = online.publish(keydir / IMAGE_REPO)
    updater(tmp_path / "after", files["1.root.json"], files).refresh()
    assert _trusted_root_version(tmp_path / "after") == 2

    online.signers["timestamp"] = old_timestamp
    files = online.publish(keydir / IMAGE_REPO)
    with pytest.raises(UnsignedMetadataError):
        updater(tmp_path / "old-key", files["1.root.json"], files).refresh()
