"""Releasing signs one target entry into one bin; devices then find it through TUF."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Targets

from fleetcast.exceptions import UsageError, ValidationError
from fleetcast.trust import CUSTOM_KEY, IMAGE_REPO, target_path
from fleetcast.trust.metadir import MetadataDir
from fleetcast.trust.offline import bin_for, expiry, target_entry
from fleetcast.trust.operations import release, sign_file, upload_plan
from tests.trust.tufrepo import OnlineSigner, updater


def _entry(name: str, version: str, counter: int = 100, content: bytes = b"artifact") -> object:
    return target_entry(
        target_path(name, version),
        len(content),
        hashlib.sha256(content).hexdigest(),
        name=name,
        version=version,
        compatible=["acme-gw"],
        release_counter=counter,
        manifest_sha256="ab" * 32,
    )


def _release(keydir: Path, entry: object, **kwargs: object) -> Path:
    image = MetadataDir(keydir / IMAGE_REPO)
    written, md = release(
        keydir, entry, targets=image.load("targets").signed, expires=expiry(10),  # type: ignore[arg-type]
        current=kwargs.pop("current", None), **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    image.write(md, written.role)
    return written.path


def test_a_released_target_is_found_by_a_device_client(
    keydir: Path, online: OnlineSigner, tmp_path: Path
) -> None:
    """After `artifact release`, python-tuf's client finds the target with its
    length, hash and Fleetcast's custom fields, signed offline."""
    entry = _entry("acme-fw", "1.2.0", counter=1764739200)
    path = _release(keydir, entry)
    assert path.name.startswith("2.bins-")

    files = online.publish(keydir / IMAGE_REPO)
    info = updater(tmp_path / "client", files["1.root.json"], files).get_targetinfo(
        "acme-fw/1.2.0.fca"
    )
    assert info is not None
    assert info.length == len(b"artifact")
    assert info.hashes == {"sha256": hashlib.sha256(b"artifact").hexdigest()}
    assert info.custom[CUSTOM_KEY] == {
        "name": "acme-fw",
        "version": "1.2.0",
        "compatible": ["acme-gw"],
        "release_counter": 1764739200,
        "manifest_sha256": "ab" * 32,
    }


def test_releases_accumulate_and_a_re_release_replaces_the_entry(keydir: Path) -> None:
    """Each release bumps its bin's version and keeps the other entries; releasing
    the same path again (a deliberate rollback gets a new counter) replaces it."""
    image = MetadataDir(keydir / IMAGE_REPO)
    targets: Targets = image.load("targets").signed
    paths = [target_path("fw", f"1.0.{i}") for i in range(12)]
    for p in paths:
        name, version = p.removesuffix(".fca").split("/")
        _release(keydir, _entry(name, version))
    released = {}
    for role in image.roles() - {"root", "targets"}:
        md: Metadata[Targets] = image.load(role)
        assert md.signed.version == 1 + len(md.signed.targets)
        for path in md.signed.targets:
            assert bin_for(targets, path) == role
        released.update(md.signed.targets)
    assert sorted(released) == sorted(paths)

    _release(keydir, _entry("fw", "1.0.0", counter=999))
    again: Metadata[Targets] = image.load(bin_for(targets, paths[0]))
    assert again.signed.targets[paths[0]].custom[CUSTOM_KEY]["release_counter"] == 999


def test_a_tampered_server_bin_is_not_signed_over(keydir: Path) -> None:
    """The server's copy of a bin is the starting point of a release; one the
    server changed (an extra target) no longer verifies, and the operator's keys
    refuse to sign over it."""
    image = MetadataDir(keydir / IMAGE_REPO)
    targets: Targets = image.load("targets").signed
    entry = _entry("fw", "2.0.0")
    role = bin_for(targets, entry.path)  # type: ignore[attr-defined]
    server_copy: Metadata[Targets] = image.load(role)
    server_copy.signed.targets["evil/1.0.0.fca"] = _entry("evil", "1.0.0")  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="does not verify"):
        release(keydir, entry, targets=targets, current=server_copy, expires=expiry(1))  # type: ignore[arg-type]


def test_a_local_release_not_yet_uploaded_is_not_dropped(keydir: Path) -> None:
    """An air-gapped release left a newer bin in DIR; releasing against the
    server's older copy would lose it, so it is refused until uploaded."""
    image = MetadataDir(keydir / IMAGE_REPO)
    targets: Targets = image.load("targets").signed
    first = _entry("fw", "3.0.0")
    role = bin_for(targets, first.path)  # type: ignore[attr-defined]
    server_copy = image.load(role)
    _release(keydir, first)
    with pytest.raises(UsageError, match="upload it first"):
        release(keydir, _entry("fw", "3.0.0", counter=5), targets=targets,  # type: ignore[arg-type]
                current=server_copy, expires=expiry(1))  # fmt: skip


def test_threshold_signing_by_two_people(tmp_path: Path, online: OnlineSigner) -> None:
    """With targets threshold 2 and one key here, a release is refused unless
    partial; the partial bin is not uploadable until the second key holder adds
    their signature with `tuf sign`."""
    from fleetcast.trust.operations import InitOptions, init_dir

    keydir = tmp_path / "keys"
    init_dir(keydir, InitOptions(root_keys=1, root_threshold=1, targets_keys=2,
                                 targets_threshold=2, bin_bits=1, expires=expiry(5)),
             online.keys())  # fmt: skip
    elsewhere = tmp_path / "colleague"
    elsewhere.mkdir()
    shutil.move(keydir / "targets-2.key", elsewhere / "targets-2.key")

    entry = _entry("fw", "1.0.0")
    with pytest.raises(UsageError, match="1 of the 2 signatures"):
        _release(keydir, entry)
    path = _release(keydir, entry, partial=True)
    with pytest.raises(UsageError, match="not signed enough to upload"):
        upload_plan(keydir, lambda repo, role: 0 if role == "root" else 1)

    with pytest.raises(UsageError, match="not a key of the"):
        sign_file(path, keydir / "root-1.key")
    done = sign_file(path, elsewhere / "targets-2.key")
    assert done.complete
    plan = upload_plan(keydir, lambda repo, role: 0 if role == "root" else 1)
    assert [(u.role, u.version) for u in plan if u.repo == IMAGE_REPO and u.role != "root"] == [
        (path.name.split(".")[1], 2)
    ]
