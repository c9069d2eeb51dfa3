"""`keys init`'s offline half: keys, both roots, targets with hash bins, empty bins."""

from __future__ import annotations

from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root, Targets

from fleetcast.exceptions import UsageError
from fleetcast.trust import BINS_PREFIX, DIRECTOR_REPO, IMAGE_REPO
from fleetcast.trust.keys import KeyDir
from fleetcast.trust.metadir import MetadataDir
from fleetcast.trust.offline import expiry
from fleetcast.trust.operations import InitOptions, init_dir
from tests.trust.tufrepo import OnlineSigner, updater


def test_keys_are_private_files_and_metadata_verifies_with_python_tuf(
    keydir: Path, online: OnlineSigner
) -> None:
    """Every key file is 0600; the image root trusts itself (2 of 3), the
    targets keys and the server's online keys; targets delegates to 4 bins
    that each verify against that delegation."""
    keys = KeyDir(keydir)
    assert len(keys.keys("root")) == 3 and len(keys.keys("targets")) == 2
    for key in [*keys.keys("root"), *keys.keys("targets")]:
        assert key.path.stat().st_mode & 0o777 == 0o600
        assert b"BEGIN PRIVATE KEY" in key.path.read_bytes()

    image = MetadataDir(keydir / IMAGE_REPO)
    root_md: Metadata[Root] = image.load("root")
    root = root_md.signed
    root.verify_delegate("root", root_md.signed_bytes, root_md.signatures)
    assert root.consistent_snapshot and root.roles["root"].threshold == 2
    assert set(root.roles["root"].keyids) == set(keys.signers("root"))
    assert set(root.roles["targets"].keyids) == set(keys.signers("targets"))
    assert root.roles["snapshot"].keyids == [online.signers["snapshot"].public_key.keyid]
    assert root.roles["timestamp"].keyids == [online.signers["timestamp"].public_key.keyid]

    targets_md: Metadata[Targets] = image.load("targets")
    root.verify_delegate("targets", targets_md.signed_bytes, targets_md.signatures)
    succinct = targets_md.signed.delegations.succinct_roles  # type: ignore[union-attr]
    assert (succinct.name_prefix, succinct.bit_length, succinct.threshold) == (BINS_PREFIX, 2, 1)
    bins = sorted(image.roles() - {"root", "targets"})
    assert bins == ["bins-0", "bins-1", "bins-2", "bins-3"]
    for name in bins:
        bin_md = image.load(name)
        targets_md.signed.verify_delegate(name, bin_md.signed_bytes, bin_md.signatures)
        assert bin_md.signed.targets == {}

    director: Metadata[Root] = MetadataDir(keydir / DIRECTOR_REPO).load("root")
    director.signed.verify_delegate("root", director.signed_bytes, director.signatures)
    assert director.signed.roles["root"].keyids == root.roles["root"].keyids
    director_key = online.signers["director"].public_key.keyid
    for role in ("targets", "snapshot", "timestamp"):
        assert director.signed.roles[role].keyids == [director_key]


def test_a_device_client_accepts_both_repositories(
    keydir: Path, online: OnlineSigner, tmp_path: Path
) -> None:
    """python-tuf's client, trusting 1.root.json, refreshes both repositories once
    the server adds its online metadata; looking up a target that is not released
    finds its (empty) bin rather than a missing file."""
    image_files = online.publish(keydir / IMAGE_REPO)
    client = updater(tmp_path / "c-image", image_files["1.root.json"], image_files)
    client.refresh()
    assert client.get_targetinfo("acme-fw/1.0.0.fca") is None
    assert any(name.endswith(".json") and "bins-" in name for name in client._fetcher.fetched)  # type: ignore[attr-defined]

    director_files = online.publish(keydir / DIRECTOR_REPO)
    updater(tmp_path / "c-dir", director_files["1.root.json"], director_files).refresh()


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (InitOptions(root_keys=3, root_threshold=4), "root threshold 4 is more than its 3"),
        (InitOptions(root_keys=1, root_threshold=0), "root threshold must be at least 1"),
        (InitOptions(targets_keys=2, targets_threshold=3), "targets threshold 3"),
        (InitOptions(targets_keys=0, targets_threshold=1), "targets threshold 1 is more"),
        (InitOptions(bin_bits=0), "--bin-bits must be between 1 and 16"),
        (InitOptions(bin_bits=17), "--bin-bits must be between 1 and 16"),
    ],
)
def test_impossible_thresholds_are_refused_before_anything_is_written(
    tmp_path: Path, online: OnlineSigner, opts: InitOptions, message: str
) -> None:
    opts = InitOptions(**{**opts.__dict__, "expires": expiry(1)})
    with pytest.raises(UsageError, match=message):
        init_dir(tmp_path / "keys", opts, online.keys())
    assert list(tmp_path.iterdir()) == []


def test_an_existing_key_directory_is_never_touched(tmp_path: Path, online: OnlineSigner) -> None:
    path = tmp_path / "keys"
    path.mkdir()
    (path / "root-1.key").write_text("someone's key")
    with pytest.raises(UsageError, match="exists and is not empty"):
        init_dir(path, InitOptions(expires=expiry(1)), online.keys())
    assert [p.name for p in path.iterdir()] == ["root-1.key"]
    assert [p.name for p in tmp_path.iterdir()] == ["keys"]  # no staging left over


def test_an_empty_directory_is_used(tmp_path: Path, online: OnlineSigner) -> None:
    path = tmp_path / "keys"
    path.mkdir()
    init_dir(path, InitOptions(root_keys=1, root_threshold=1, bin_bits=1, expires=expiry(1)),
             online.keys())  # fmt: skip
    assert path.stat().st_mode & 0o777 == 0o700
    assert (path / "image" / "1.bins-1.json").is_file()
