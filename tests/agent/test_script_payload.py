"""``script`` payloads, and artifacts whose payloads install together (all or none)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice, StepResult
from fleetcast.agent.payloads import SCRIPTS_DIR
from tests.agent.conftest import (
    FakeApi,
    Tree,
    drive,
    flip_payload_byte,
    make_bundle,
    make_tar,
    python_script,
    read_tree,
)

OLD: Tree = {"app.conf": b"level=1\n"}
NEW: Tree = {"app.conf": b"level=2\n", "plugins": None, "plugins/x.conf": b"x\n"}
OLD_DATA: Tree = {"db.json": b"{}"}
NEW_DATA: Tree = {"db.json": b'{"v": 2}'}


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    dest = tmp_path / "rootfs" / "etc" / "acme"
    dest.mkdir(parents=True)
    (dest / "app.conf").write_bytes(OLD["app.conf"] or b"")
    return dest


@pytest.fixture
def data(tmp_path: Path) -> Path:
    dest = tmp_path / "rootfs" / "var" / "acme"
    dest.mkdir(parents=True)
    (dest / "db.json").write_bytes(OLD_DATA["db.json"] or b"")
    return dest


def _recording_script(out: Path, *, exit_code: int = 0) -> bytes:
    """A script that records its environment, its own mode and what it sees, then exits."""
    return python_script(
        "import json, os, sys\n"
        f"out = {str(out)!r}\n"
        "seen = {k: v for k, v in os.environ.items() if k.startswith('FLEETCAST_')}\n"
        "seen['mode'] = oct(os.stat(sys.argv[0]).st_mode & 0o777)\n"
        "seen['script_dir'] = os.path.dirname(sys.argv[0])\n"
        "with open(out, 'a') as fh: fh.write(json.dumps(seen) + '\\n')\n"
        "print('script output line')\n"
        f"sys.exit({exit_code})"
    )


def _reads_conf_script(out: Path, conf: Path) -> bytes:
    return python_script(
        f"open({str(out)!r}, 'w').write(open({str(conf)!r}).read())\nprint('applied')"
    )


def test_script_runs_with_the_health_check_environment(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """A script-only artifact: the device writes the script (0700) to its state dir, runs
    it with the FLEETCAST_* variables health checks get plus FLEETCAST_PAYLOAD_NAME,
    reports success and records acme-migrate 1.1.0; no reboot."""
    out = tmp_path / "ran.jsonl"
    bundle = make_bundle(
        tmp_path / "art",
        vendor_key,
        [("migrate", "script", _recording_script(out), {})],
        name="acme-migrate",
    )
    api.offer(bundle)
    results = drive(device, api)
    assert results[-1] is StepResult.UPDATED and StepResult.REBOOT_REQUIRED not in results
    (seen,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert seen["FLEETCAST_PAYLOAD_NAME"] == "migrate"
    assert seen["FLEETCAST_ARTIFACT_NAME"] == "acme-migrate"
    assert seen["FLEETCAST_ARTIFACT_VERSION"] == "1.1.0"
    assert seen["FLEETCAST_SLOT"] == "a"
    assert seen["FLEETCAST_SLOT_PATH"] == str(device.config.slots.a)
    assert seen["mode"] == "0o700"
    assert Path(seen["script_dir"]) == device.config.state_dir / SCRIPTS_DIR
    assert not (device.config.state_dir / SCRIPTS_DIR).exists()  # removed after the commit
    assert device.installed_in_place() == {"acme-migrate": "1.1.0"}
    assert api.inventories[-1].attributes["artifact.acme-migrate"] == "1.1.0"


def test_files_and_script_install_together(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    etc: Path,
    data: Path,
) -> None:
    """A bundle of two files payloads and a script: both directories are switched before
    the script runs (it sees the new configuration), then everything commits."""
    out = tmp_path / "applied.txt"
    bundle = make_bundle(
        tmp_path / "art",
        vendor_key,
        [
            ("apply", "script", _reads_conf_script(out, etc / "app.conf"), {}),
            ("conf", "files", make_tar(NEW), {"dest": str(etc)}),
            ("data", "files", make_tar(NEW_DATA), {"dest": str(data)}),
        ],
    )
    api.offer(bundle)
    assert drive(device, api)[-1] is StepResult.UPDATED
    assert out.read_bytes() == NEW["app.conf"]
    assert read_tree(etc) == dict(NEW) and read_tree(data) == dict(NEW_DATA)
    assert device.installed_in_place() == {"acme-bundle": "1.1.0"}


def test_failing_script_rolls_back_every_files_payload(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    etc: Path,
    data: Path,
) -> None:
    """The bundle's migration script exits 4: both directories are put back as they
    were, and the failure report (rolled_back) carries the script's output."""
    out = tmp_path / "ran.jsonl"
    bundle = make_bundle(
        tmp_path / "art",
        vendor_key,
        [
            ("conf", "files", make_tar(NEW), {"dest": str(etc)}),
            ("data", "files", make_tar(NEW_DATA), {"dest": str(data)}),
            ("migrate", "script", _recording_script(out, exit_code=4), {}),
        ],
    )
    api.offer(bundle)
    assert drive(device, api)[-1] is StepResult.ROLLED_BACK
    final = api.final["dep-1"]
    assert final.status == "failure" and final.rolled_back
    assert "script payload migrate failed (exit 4)" in final.message
    assert any("script output line" in line for line in final.log_tail)
    assert out.exists()  # it did run
    assert read_tree(etc) == dict(OLD) and read_tree(data) == dict(OLD_DATA)
    assert sorted(p.name for p in etc.parent.parent.rglob(".*")) == []
    assert device.installed_in_place() == {}
    assert api.inventories[-1].attributes.get("artifact.acme-bundle") is None


def test_script_timeout_is_a_failure(
    make_device: Callable[..., SimulatedDevice],
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    etc: Path,
) -> None:
    """A script that hangs is killed after limits.script_timeout; the files go back."""
    device = make_device(script_timeout=0.5)
    hang = python_script("import time\nprint('hanging', flush=True)\ntime.sleep(60)")
    bundle = make_bundle(
        tmp_path / "art",
        vendor_key,
        [("conf", "files", make_tar(NEW), {"dest": str(etc)}), ("hang", "script", hang, {})],
    )
    api.offer(bundle)
    started = time.monotonic()
    assert drive(device, api)[-1] is StepResult.ROLLED_BACK
    assert time.monotonic() - started < 10
    final = api.final["dep-1"]
    assert "timed out after 0.5s" in final.message and final.rolled_back
    assert any("hanging" in line for line in final.log_tail)
    assert read_tree(etc) == dict(OLD)


def test_scripts_run_only_after_every_payload_is_verified(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    etc: Path,
) -> None:
    """The script comes first in the artifact, a tampered files payload after it: the
    script never runs, nothing is switched, and the failure is not a rollback."""
    out = tmp_path / "ran.jsonl"
    bundle = make_bundle(
        tmp_path / "art",
        vendor_key,
        [
            ("migrate", "script", _recording_script(out), {}),
            ("conf", "files", make_tar(NEW), {"dest": str(etc)}),
        ],
    )
    flip_payload_byte(bundle, payload=1)
    api.offer(bundle)
    assert drive(device, api)[-1] is StepResult.FAILED
    assert not out.exists()
    assert not api.final["dep-1"].rolled_back
    assert read_tree(etc) == dict(OLD)
    assert not (device.config.state_dir / SCRIPTS_DIR).exists()
