"""Update modules: the handler protocol, all-or-none with other payloads, and the shipped
handlers (file, script, deb) run for real (the deb one with dpkg --root into a temp root)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import AgentConfig, SimulatedDevice, StepResult
from fleetcast.agent.config import HealthConfig, ModulesConfig
from fleetcast.core.manifest import Payload
from fleetcast.exceptions import ValidationError
from tests.agent.boards import PACKAGING, require_tools
from tests.agent.conftest import (
    CutAt,
    FakeApi,
    PowerCut,
    drive,
    make_bundle,
    make_tar,
    read_tree,
)

RECORDER = f"""#!{sys.executable}
# A test handler: records each call; fails the verbs listed in meta "fail".
import json, os, sys, time
verb, work = sys.argv[1], sys.argv[2]
log = os.environ["RECORD"]
state = json.load(open(os.path.join(work, "state.json")))
with open(log, "a") as fh:
    fh.write(json.dumps({{
        "verb": verb, "payload": os.environ["FLEETCAST_PAYLOAD_NAME"],
        "content": open(os.environ["FLEETCAST_PAYLOAD_FILE"], "rb").read().decode(),
        "meta_color": os.environ.get("FLEETCAST_META_COLOR"),
        "version": os.environ["FLEETCAST_ARTIFACT_VERSION"],
        "protocol": state["protocol"], "state_verb": state["verb"],
        "handler_state": state["handler_state"],
    }}) + "\\n")
result = {{"message": "did " + verb, "state": {{"last": verb}}}}
json.dump(result, open(os.path.join(work, "result.json"), "w"))
if verb == os.environ.get("FLEETCAST_META_SLEEP"):
    time.sleep(30)
sys.exit(1 if verb in os.environ.get("FLEETCAST_META_FAIL", "").split(",") else 0)
"""


class ModuleDevice:
    """A simulated device with an update-modules directory (drive() needs config + power_cycle)."""

    def __init__(self, device: SimulatedDevice, modules_dir: Path, **health: object) -> None:
        self.device = device
        config: AgentConfig = device.config
        self.config = replace(
            config,
            modules=ModulesConfig(dir=modules_dir, timeout=5),
            health=replace(config.health, **health),  # type: ignore[arg-type]
        )

    def power_cycle(self) -> str:
        return self.device.power_cycle()


@pytest.fixture
def modules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "modules"
    directory.mkdir()
    recorder = directory / "recorder"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    for name in ("file", "script", "deb"):
        shutil.copy(PACKAGING / "modules" / name, directory / name)
    return directory


@pytest.fixture
def record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], list[dict[str, object]]]:
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv("RECORD", str(path))

    def calls() -> list[dict[str, object]]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    return calls


def _module(
    name: str, content: bytes, handler: str = "recorder", **meta: str
) -> tuple[str, str, bytes, dict[str, str]]:
    return (name, "module", content, {"handler": handler, **meta})


def test_manifest_refuses_a_module_without_a_plain_handler_name() -> None:
    base = {"name": "m", "type": "module", "size": 0, "sha256": "0" * 64}
    base |= {"compressed_size": 0, "compressed_sha256": "0" * 64}
    for handler in ("", "../bin/sh", "a/b", "UPPER"):
        with pytest.raises(ValidationError, match="handler"):
            Payload.from_dict({**base, "meta": {"handler": handler}})
    assert Payload.from_dict({**base, "meta": {"handler": "deb"}}).meta["handler"] == "deb"


def test_protocol_verbs_state_and_environment(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    modules_dir: Path,
    record: Callable[[], list[dict[str, object]]],
) -> None:
    """Two module payloads: each is staged, installed and committed in manifest order;
    the handler sees its verified payload, its meta as FLEETCAST_META_*, the protocol
    version and verb in state.json, and the state it returned from the previous call."""
    artifact = make_bundle(
        tmp_path / "art",
        vendor_key,
        [_module("one", b"first", color="blue"), _module("two", b"second")],
    )
    api.offer(artifact)
    board = ModuleDevice(device, modules_dir)
    assert drive(board, api)[-1] is StepResult.UPDATED  # type: ignore[arg-type]
    calls = record()
    assert [(c["payload"], c["verb"]) for c in calls] == [
        ("one", "stage"),
        ("two", "stage"),
        ("one", "install"),
        ("two", "install"),
        ("one", "commit"),
        ("two", "commit"),
    ]
    first = calls[0]
    assert (first["content"], first["meta_color"], first["version"]) == ("first", "blue", "1.1.0")
    assert first["protocol"] == 1 and first["state_verb"] == "stage"
    assert first["handler_state"] is None and calls[2]["handler_state"] == {"last": "stage"}
    assert device.installed_in_place() == {"acme-bundle": "1.1.0"}
    assert not (device.config.state_dir / "modules").exists()
    assert any("did install" in line for line in api.final["dep-1"].log_tail) is False  # success
    assert any("module recorder (one) commit done" in r for r in _log(device))


def _log(device: SimulatedDevice) -> list[str]:
    from fleetcast.agent.journal import Journal

    return list(Journal(device.config.state_dir).load().log)


def test_failed_install_rolls_back_every_payload_all_or_none(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    modules_dir: Path,
    record: Callable[[], list[dict[str, object]]],
) -> None:
    """A files payload and two modules; the second module's install fails: both modules
    are rolled back in reverse order and the files payload is restored too."""
    dest = tmp_path / "etc" / "acme"
    dest.mkdir(parents=True)
    (dest / "app.conf").write_bytes(b"old")
    artifact = make_bundle(
        tmp_path / "art",
        vendor_key,
        [
            ("conf", "files", make_tar({"app.conf": b"new"}), {"dest": str(dest)}),
            _module("one", b"first"),
            _module("two", b"second", fail="install"),
        ],
    )
    api.offer(artifact)
    results = drive(ModuleDevice(device, modules_dir), api)  # type: ignore[arg-type]
    assert results[-1] is StepResult.ROLLED_BACK
    verbs = [(c["payload"], c["verb"]) for c in record()]
    assert verbs[-3:] == [("two", "install"), ("two", "rollback"), ("one", "rollback")]
    assert read_tree(dest) == {"app.conf": b"old"}
    final = api.final["dep-1"]
    assert final.rolled_back and "module recorder (two) install failed" in (final.message or "")


def test_failed_stage_fails_before_anything_is_live(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    modules_dir: Path,
    record: Callable[[], list[dict[str, object]]],
) -> None:
    api.offer(make_bundle(tmp_path / "art", vendor_key, [_module("one", b"x", fail="stage")]))
    assert drive(ModuleDevice(device, modules_dir), api)[-1] is StepResult.FAILED  # type: ignore[arg-type]
    assert [c["verb"] for c in record()] == ["stage"]
    assert not api.final["dep-1"].rolled_back


def test_hung_handler_is_killed_and_fails(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    modules_dir: Path,
    record: Callable[[], list[dict[str, object]]],
) -> None:
    api.offer(make_bundle(tmp_path / "art", vendor_key, [_module("one", b"x", sleep="install")]))
    results = drive(ModuleDevice(device, modules_dir), api)  # type: ignore[arg-type]
    assert results[-1] is StepResult.ROLLED_BACK
    assert "timed out after 5s" in (api.final["dep-1"].message or "")
    assert [c["verb"] for c in record()] == ["stage", "install", "rollback"]


def test_missing_handler_is_refused_before_download(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    modules_dir: Path,
) -> None:
    api.offer(make_bundle(tmp_path / "art", vendor_key, [_module("one", b"x", handler="nosuch")]))
    assert drive(ModuleDevice(device, modules_dir), api)[-1] is StepResult.FAILED  # type: ignore[arg-type]
    assert "update module 'nosuch'" in (api.final["dep-1"].message or "")
    assert api.sources == []


@pytest.mark.parametrize(
    "cut", ["module-staged", "payload-switching", "module-installed", "module-committed"]
)
def test_power_cut_during_a_module_update_converges(
    make_device: Callable[..., SimulatedDevice],
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    modules_dir: Path,
    record: Callable[[], list[dict[str, object]]],
    cut: str,
) -> None:
    """Killed at a module transition, a fresh agent finishes: before anything is live it
    stages again; once an install started it rolls back (calling rollback); a cut during
    commit is committed again. Every install is matched by a commit or a rollback."""
    device = make_device()
    api.offer(
        make_bundle(tmp_path / "art", vendor_key, [_module("one", b"x"), _module("two", b"y")])
    )
    board = ModuleDevice(device, modules_dir)
    with pytest.raises(PowerCut):
        drive(board, api, hook=CutAt(cut))  # type: ignore[arg-type]
    drive(board, api)  # type: ignore[arg-type]
    final = api.final["dep-1"]
    verbs = [(c["payload"], c["verb"]) for c in record()]
    for name in ("one", "two"):
        installs = [v for p, v in verbs if p == name and v == "install"]
        ends = [v for p, v in verbs if p == name and v in ("commit", "rollback")]
        assert not installs or ends, (name, verbs)
    if cut in ("module-staged", "module-committed"):
        assert final.status == "success", verbs
    else:
        assert final.status == "failure" and final.rolled_back, verbs
        assert ("one", "rollback") in verbs


# ------------------------------------------------------------------ the shipped handlers


def test_file_handler_installs_and_rolls_back(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    modules_dir: Path,
) -> None:
    """handler=file replaces one existing file and creates another; the health check
    fails, so the first gets its old content and mode back and the second disappears."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "app.conf").write_bytes(b"old")
    (etc / "app.conf").chmod(0o600)
    payloads = [
        _module("conf", b"new", handler="file", dest=str(etc / "app.conf"), mode="0640"),
        _module("extra", b"extra", handler="file", dest=str(etc / "sub" / "extra.conf")),
    ]
    api.offer(make_bundle(tmp_path / "a1", vendor_key, payloads, version="1.1.0"))
    board = ModuleDevice(device, modules_dir, commands=(("sh", "-c", f"test -f {etc}/nope"),))
    assert drive(board, api)[-1] is StepResult.ROLLED_BACK  # type: ignore[arg-type]
    assert (etc / "app.conf").read_bytes() == b"old"
    assert (etc / "app.conf").stat().st_mode & 0o777 == 0o600
    assert not (etc / "sub" / "extra.conf").exists()
    api2 = FakeApi()
    api2.offer(
        make_bundle(tmp_path / "a2", vendor_key, payloads, version="1.2.0"), deployment_id="dep-2"
    )
    board = ModuleDevice(device, modules_dir)
    assert drive(board, api2)[-1] is StepResult.UPDATED  # type: ignore[arg-type]
    assert (etc / "app.conf").read_bytes() == b"new"
    assert (etc / "app.conf").stat().st_mode & 0o777 == 0o640
    assert (etc / "sub" / "extra.conf").read_bytes() == b"extra"
    assert sorted(p.name for p in etc.iterdir()) == ["app.conf", "sub"]


def test_script_handler_runs_the_payload_with_each_verb(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    modules_dir: Path,
) -> None:
    trace = tmp_path / "trace"
    program = f'#!/bin/sh\necho "$1" >> {trace}\n'.encode()
    api.offer(
        make_bundle(tmp_path / "art", vendor_key, [_module("job", program, handler="script")])
    )
    board = ModuleDevice(device, modules_dir, commands=(("false",),))
    assert drive(board, api)[-1] is StepResult.ROLLED_BACK  # type: ignore[arg-type]
    assert trace.read_text().split() == ["install", "rollback"]


def _deb(directory: Path, version: str, text: str) -> bytes:
    pkg = directory / f"pkg-{version}"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/share/acme").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        f"Package: acme-tool\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: Fleetcast tests <tests@example.com>\nDescription: test package\n"
    )
    (pkg / "usr/share/acme/version.txt").write_text(text)
    out = directory / f"acme-tool_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(out)],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


def test_deb_handler_with_dpkg_into_a_root(
    make_device: Callable[..., SimulatedDevice],
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    modules_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """handler=deb with the real dpkg into a temporary root (dpkg --root): 1.0 installs
    and commits (a copy is kept); 2.0 fails its health check and is rolled back by
    reinstalling the kept 1.0; a package new to the device is purged on rollback."""
    require_tools("dpkg", "dpkg-deb", "dpkg-query")
    root = tmp_path / "root"
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/dpkg/updates").mkdir()
    (root / "var/lib/dpkg/status").touch()
    monkeypatch.setenv("FLEETCAST_DEB_ROOT", str(root))
    monkeypatch.setenv("FLEETCAST_DEB_KEEP", str(tmp_path / "keep"))
    monkeypatch.setenv("PATH", "/usr/sbin:/sbin:" + __import__("os").environ["PATH"])
    installed = root / "usr/share/acme/version.txt"

    attempts = iter(range(100))

    def offer(version: str, *, healthy: bool) -> StepResult:
        api = FakeApi()
        n = next(attempts)
        deb = _deb(tmp_path / f"debs-{n}", version, f"acme {version}")
        bundle = make_bundle(
            tmp_path / f"art-{n}",
            vendor_key,
            [_module("tool", deb, handler="deb")],
            version=version,
        )
        api.offer(bundle, deployment_id=f"dep-{n}")
        board = ModuleDevice(device, modules_dir, commands=() if healthy else (("false",),))
        return drive(board, api)[-1]  # type: ignore[arg-type]

    device = make_device()
    assert offer("1.0.0", healthy=False) is StepResult.ROLLED_BACK
    assert not installed.exists()  # new to the device: purged
    assert offer("1.0.0", healthy=True) is StepResult.UPDATED
    assert installed.read_text() == "acme 1.0.0"
    assert (tmp_path / "keep" / "acme-tool.deb").exists()
    assert offer("2.0.0", healthy=False) is StepResult.ROLLED_BACK
    assert installed.read_text() == "acme 1.0.0"
    status = subprocess.run(
        ["dpkg-query", f"--root={root}", "-W", "-f=${Version}", "acme-tool"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == "1.0.0"


def test_health_config_defaults_keep_old_behaviour() -> None:
    assert HealthConfig().systemd is False and HealthConfig().server is False
