"""``files`` payloads: a tar archive swapped into a directory in place, without a reboot."""

from __future__ import annotations

import contextlib
import copy
import random
import re
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import Agent, SimulatedDevice, StepResult
from fleetcast.agent.journal import Journal, Phase
from fleetcast.agent.payloads import FilesTarget, InPlacePlan
from fleetcast.exceptions import ValidationError
from tests.agent.conftest import (
    FakeApi,
    Tree,
    drive,
    flip_payload_byte,
    make_bundle,
    make_files_artifact,
    make_tar,
    read_tree,
)
from tests.factories import make_artifact

OLD: Tree = {"app.conf": b"level=1\n", "certs": None, "certs/ca.pem": b"old-ca\n", "gone": b"x"}
NEW: Tree = {
    "app.conf": b"level=2\n",
    "certs": None,
    "certs/ca.pem": b"new-ca\n",
    "extra": None,
    "extra/deep": None,
    "extra/deep/file.txt": b"deep\n",
}


def _write_tree(root: Path, tree: Tree) -> None:
    root.mkdir(parents=True)
    for name, data in tree.items():
        path = root / name
        if data is None:
            path.mkdir(exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """A configuration directory holding the OLD tree."""
    path = tmp_path / "rootfs" / "etc" / "acme"
    _write_tree(path, OLD)
    return path


def _siblings(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith("."))


def test_files_install_replaces_the_directory_without_reboot(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey, dest: Path
) -> None:
    """An operator deploys acme-conf 1.1.0 (a files payload for /etc/acme): the device
    swaps the directory in place, without a reboot, reports success, and its inventory
    lists acme-conf 1.1.0 next to the unchanged root file system."""
    artifact = make_files_artifact(tmp_path / "art", vendor_key, NEW, dest)
    api.offer(artifact)
    results = drive(device, api)
    assert results[-1] is StepResult.UPDATED
    assert StepResult.REBOOT_REQUIRED not in results
    assert read_tree(dest) == dict(NEW)  # "gone" is gone: the directory is replaced whole
    assert stat.S_IMODE((dest / "app.conf").stat().st_mode) == 0o644
    assert (dest / "app.conf").stat().st_mtime == 1_700_000_000
    assert _siblings(dest) == []  # no staging or backup left behind
    assert api.statuses() == ["downloading", "installing", "success"]
    assert device.installed_in_place() == {"acme-conf": "1.1.0"}
    assert device.installed() == ("acme-fw", "1.0.0") and device.booted_slot() == "a"
    inventory = api.inventories[-1]
    assert (inventory.artifact_name, inventory.artifact_version) == ("acme-fw", "1.0.0")
    assert inventory.attributes["artifact.acme-conf"] == "1.1.0"
    assert device.slot_bytes("b") == b""


def test_files_install_creates_a_missing_dest(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    dest = tmp_path / "new-root" / "opt" / "acme"
    api.offer(make_files_artifact(tmp_path / "art", vendor_key, NEW, dest))
    assert drive(device, api)[-1] is StepResult.UPDATED
    assert read_tree(dest) == dict(NEW)


def _member(name: str, kind: bytes, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(
    ("member", "match"),
    [
        (_member("/etc/passwd", tarfile.REGTYPE, size=1), "absolute"),
        (_member("certs/../../escape", tarfile.REGTYPE, size=1), r"'\.\.'"),
        (_member("../escape", tarfile.DIRTYPE), r"'\.\.'"),
        (_member("link", tarfile.SYMTYPE, linkname="/etc/shadow"), "symbolic link"),
        (_member("hard", tarfile.LNKTYPE, linkname="app.conf"), "hard link"),
        (_member("tty", tarfile.CHRTYPE, devmajor=5, devminor=0), "character device"),
        (_member("disk", tarfile.BLKTYPE, devmajor=8, devminor=0), "block device"),
        (_member("pipe", tarfile.FIFOTYPE), "fifo"),
        (_member("app.conf", tarfile.REGTYPE, size=1), "twice"),
    ],
)
def test_bad_tar_members_are_refused_and_dest_is_untouched(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    dest: Path,
    member: tarfile.TarInfo,
    match: str,
) -> None:
    """A signed archive that would write outside dest, or create a link or a device:
    the device reports failure naming the member, and /etc/acme stays as it was."""
    artifact = make_artifact(
        tmp_path / "art",
        vendor_key,
        name="acme-conf",
        image=make_tar(NEW, extra=[copy.copy(member)]),
        payload_type="files",
        meta={"dest": str(dest)},
    )
    api.offer(artifact)
    assert drive(device, api)[-1] is StepResult.FAILED
    final = api.final["dep-1"]
    assert final.status == "failure" and not final.rolled_back
    assert "files payload 'rootfs'" in final.message
    assert re.search(match, final.message), final.message
    assert read_tree(dest) == dict(OLD)
    assert _siblings(dest) == []
    assert device.installed_in_place() == {}
    assert not (tmp_path / "escape").exists() and not (dest.parent / "escape").exists()


def test_payload_that_is_not_a_tar_is_refused(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey, dest: Path
) -> None:
    bad = make_tar(NEW)
    bad = bad[:1024] + b"garbage!" * 64 + bad[1536:]  # a corrupt second header
    artifact = make_artifact(
        tmp_path / "art",
        vendor_key,
        name="acme-conf",
        image=bad,
        payload_type="files",
        meta={"dest": str(dest)},
    )
    api.offer(artifact)
    assert drive(device, api)[-1] is StepResult.FAILED
    assert "not a valid tar archive" in api.final["dep-1"].message
    assert read_tree(dest) == dict(OLD) and _siblings(dest) == []


def test_tampered_files_payload_is_refused_before_switching(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey, dest: Path
) -> None:
    """A byte flipped in the artifact on the server: the payload hash (or zstd checksum)
    fails while staging; nothing is switched and the staging directory is removed."""
    artifact = make_files_artifact(tmp_path / "art", vendor_key, NEW, dest)
    flip_payload_byte(artifact)
    api.offer(artifact)
    assert drive(device, api)[-1] is StepResult.FAILED
    assert not api.final["dep-1"].rolled_back
    assert read_tree(dest) == dict(OLD) and _siblings(dest) == []
    assert device.installed_in_place() == {}


@pytest.mark.parametrize(
    ("dest_of", "roots_of", "match"),
    [
        (lambda d: "etc/acme", lambda d: (), "absolute"),
        (lambda d: str(d), lambda d: (d.parent.parent / "var",), "files_roots"),
    ],
)
def test_bad_destination_is_refused_before_downloading(
    make_device: Callable[..., SimulatedDevice],
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    dest: Path,
    dest_of: Callable[[Path], str],
    roots_of: Callable[[Path], tuple[Path, ...]],
    match: str,
) -> None:
    device = make_device(files_roots=roots_of(dest))
    api.offer(make_files_artifact(tmp_path / "art", vendor_key, NEW, dest_of(dest)))
    assert drive(device, api)[-1] is StepResult.FAILED
    assert match in api.final["dep-1"].message
    assert api.sources == [] and read_tree(dest) == dict(OLD)


def test_files_roots_allow_a_dest_inside(
    make_device: Callable[..., SimulatedDevice],
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    dest: Path,
) -> None:
    device = make_device(files_roots=[dest.parent])
    api.offer(make_files_artifact(tmp_path / "art", vendor_key, NEW, dest))
    assert drive(device, api)[-1] is StepResult.UPDATED
    assert read_tree(dest) == dict(NEW)


def test_same_name_and_version_is_already_installed(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey, dest: Path
) -> None:
    """acme-conf 1.1.0 deployed twice: the second deployment downloads nothing and
    reports already-installed; the root file system's version plays no part."""
    artifact = make_files_artifact(tmp_path / "art", vendor_key, NEW, dest)
    api.offer(artifact)
    assert drive(device, api)[-1] is StepResult.UPDATED
    api.offer(artifact, deployment_id="dep-2")
    downloads = len(api.sources)
    assert drive(device, api)[-1] is StepResult.ALREADY_INSTALLED
    assert api.statuses("dep-2") == ["already-installed"]
    assert len(api.sources) == downloads


def test_downgrade_and_depends_are_checked_per_name(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey, dest: Path
) -> None:
    """The root file system is acme-fw 1.0.0. acme-conf 0.5.0 is not a downgrade of it
    (another name); once acme-conf 2.0.0 is installed, acme-conf 1.9.0 is refused as a
    downgrade unless the deployment allows it; a depends on a name never installed fails."""
    api.offer(make_files_artifact(tmp_path / "a05", vendor_key, NEW, dest, version="0.5.0"))
    assert drive(device, api)[-1] is StepResult.UPDATED
    api.offer(
        make_files_artifact(tmp_path / "a20", vendor_key, OLD, dest, version="2.0.0"),
        deployment_id="dep-2",
    )
    assert drive(device, api)[-1] is StepResult.UPDATED
    assert device.installed_in_place() == {"acme-conf": "2.0.0"}
    older = make_files_artifact(tmp_path / "a19", vendor_key, NEW, dest, version="1.9.0")
    api.offer(older, deployment_id="dep-3")
    assert drive(device, api)[-1] is StepResult.FAILED
    assert "older than installed 2.0.0" in api.final["dep-3"].message
    api.offer(older, deployment_id="dep-4", allow_downgrade=True)
    assert drive(device, api)[-1] is StepResult.UPDATED
    assert device.installed_in_place() == {"acme-conf": "1.9.0"}
    needs = make_files_artifact(
        tmp_path / "dep",
        vendor_key,
        NEW,
        dest.parent / "other",
        name="acme-plugin",
        version="3.0.0",
        depends={"version": ">=1.0.0"},
    )
    api.offer(needs, deployment_id="dep-5")
    assert drive(device, api)[-1] is StepResult.FAILED
    assert "device has none" in api.final["dep-5"].message


def test_in_place_artifact_may_not_take_the_root_file_systems_name(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey, dest: Path
) -> None:
    api.offer(make_files_artifact(tmp_path / "a", vendor_key, NEW, dest, name="acme-fw"))
    assert drive(device, api)[-1] is StepResult.FAILED
    assert "root file system's name" in api.final["dep-1"].message
    assert read_tree(dest) == dict(OLD)


def test_failed_health_check_restores_the_old_files(
    make_device: Callable[..., SimulatedDevice],
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    dest: Path,
) -> None:
    """The new configuration breaks the service (its health check fails): the device puts
    the old /etc/acme back and reports failure rolled_back with the check's output."""
    check = ["sh", "-c", f"grep -q level=1 {dest}/app.conf || {{ echo bad config; exit 3; }}"]
    device = make_device(health_commands=[check])
    api.offer(make_files_artifact(tmp_path / "art", vendor_key, NEW, dest))
    assert drive(device, api)[-1] is StepResult.ROLLED_BACK
    final = api.final["dep-1"]
    assert final.rolled_back and "health checks failed" in final.message
    assert any("bad config" in line for line in final.log_tail)
    assert read_tree(dest) == dict(OLD) and _siblings(dest) == []
    assert device.installed_in_place() == {}
    assert Journal(device.config.state_dir).load().phase is Phase.IDLE


def test_interrupted_download_starts_staging_over(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey, dest: Path
) -> None:
    big = {**NEW, "blob.bin": random.Random(7).randbytes(300_000)}
    artifact = make_files_artifact(tmp_path / "art", vendor_key, big, dest)
    api.offer(artifact)
    api.fail_download_after = 40_000
    results = drive(device, api)
    assert StepResult.RETRY in results and results[-1] is StepResult.UPDATED
    assert api.sources[1].opened == [0]
    assert read_tree(dest) == big and _siblings(dest) == []


# --------------------------------------------------------------------------- the swap itself


def _staged(tmp_path: Path, *, old: bool) -> FilesTarget:
    target = FilesTarget("conf", tmp_path / "etc" / "acme")
    if old:
        _write_tree(target.dest, OLD)
    else:
        target.dest.parent.mkdir(parents=True)
    assert target.prepare() is old
    _write_tree(target.staging / "x", {"new": b"1"})
    return target


@pytest.mark.parametrize("old", [True, False])
@pytest.mark.parametrize("stop_after", [0, 1, 2])
def test_restore_works_from_every_point_of_a_switch(
    tmp_path: Path, old: bool, stop_after: int
) -> None:
    """The swap is cut after 0, 1 or 2 renames; restore() (run twice, as after a second
    cut) always brings dest back to exactly the old tree (or no dest, if there was none)."""
    target = _staged(tmp_path, old=old)

    class Stop(Exception):
        pass

    def moved_aside() -> None:
        if stop_after == 1:
            raise Stop

    if stop_after > 0:
        cut = stop_after == 1 and old  # only a dest that existed is moved aside first
        with pytest.raises(Stop) if cut else contextlib.nullcontext():
            target.switch(had_previous=old, moved_aside=moved_aside)
        if cut:
            assert not target.dest.exists() and target.backup.is_dir()
        else:
            assert read_tree(target.dest) == {"x": None, "x/new": b"1"}
    for _ in range(2):
        target.restore(had_previous=old)
        if old:
            assert read_tree(target.dest) == dict(OLD)
        else:
            assert not target.dest.exists()
        assert _siblings(target.dest) == []


def test_prepare_recovers_a_dest_left_absent_without_a_journal(tmp_path: Path) -> None:
    """A switch cut between its renames while the journal was lost: the next prepare puts
    the backup (the only complete copy) back as dest."""
    target = _staged(tmp_path, old=True)
    target.dest.rename(target.backup)
    assert target.prepare() is True
    assert read_tree(target.dest) == dict(OLD)
    assert _siblings(target.dest) == [target.staging.name]


def test_overlapping_destinations_are_refused(
    tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    bundle = make_bundle(
        tmp_path,
        vendor_key,
        [
            ("a", "files", make_tar(NEW), {"dest": "/etc/acme"}),
            ("b", "files", make_tar(NEW), {"dest": "/etc/acme/sub"}),
        ],
    )
    with pytest.raises(ValidationError, match="overlap"):
        InPlacePlan.of(bundle.signed.manifest, state_dir=tmp_path, roots=())


def test_restore_cut_between_its_own_renames_is_finished_by_the_next_restore(
    tmp_path: Path,
) -> None:
    """A rollback moved the new dest aside and lost power before renaming the backup back:
    the repeated restore() finishes the job."""
    target = _staged(tmp_path, old=True)
    target.switch(had_previous=True)
    target.dest.rename(target.discard)  # restore's first rename, then the cut
    target.restore(had_previous=True)
    assert read_tree(target.dest) == dict(OLD)
    assert _siblings(target.dest) == []


def test_abort_before_switching_discards_the_staged_files(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey, dest: Path
) -> None:
    """The operator aborts while the device stages: the "installing" report is answered
    409 deployment_aborted, the staging directory is removed and /etc/acme is untouched."""
    api.offer(make_files_artifact(tmp_path / "art", vendor_key, NEW, dest))

    def abort_when_staged(name: str) -> None:
        if name == "installed":
            api.aborted.add("dep-1")

    agent = Agent(device.config, client=api, on_transition=abort_when_staged)
    assert agent.step() is StepResult.ABORTED
    assert read_tree(dest) == dict(OLD) and _siblings(dest) == []
    assert Journal(device.config.state_dir).load().phase is Phase.IDLE


def test_rootfs_artifact_may_not_take_an_in_place_name(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey, dest: Path
) -> None:
    api.offer(make_files_artifact(tmp_path / "conf", vendor_key, NEW, dest))
    assert drive(device, api)[-1] is StepResult.UPDATED
    api.offer(
        make_artifact(tmp_path / "fw", vendor_key, name="acme-conf", version="3.0.0"),
        deployment_id="dep-2",
    )
    assert drive(device, api)[-1] is StepResult.FAILED
    assert "installed in place" in api.final["dep-2"].message
    assert device.slot_bytes("b") == b""
