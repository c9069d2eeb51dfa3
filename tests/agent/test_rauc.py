"""RAUC as slot writer and boot switch, with the real rauc service on a private D-Bus.

``rauc install`` and ``rauc status`` talk to ``rauc service`` over D-Bus, so each
test starts its own ``dbus-daemon`` and points ``DBUS_SYSTEM_BUS_ADDRESS`` at it.
RAUC's bootloader here is its ``custom`` backend: a small script keeping the
primary slot and each slot's good/bad state in files (what U-Boot's or GRUB's
environment holds on a board). A "reboot" restarts the service with
``--override-boot-slot`` set to what that firmware would boot: the primary slot,
unless it was marked bad.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice, StepResult
from fleetcast.agent.bootloader import make_bootloader
from fleetcast.agent.config import BootloaderConfig, InstallerConfig
from fleetcast.agent.installers import RaucBootloader
from fleetcast.agent.slots import InstalledArtifacts
from tests.agent.boards import require_tools
from tests.agent.bundles import make_cert, make_raucb
from tests.agent.conftest import FakeApi, MiB, drive, noisy_image
from tests.factories import make_artifact

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

BACKEND = """#!/bin/sh
# RAUC custom bootloader backend over files (what the firmware environment holds).
d={boot}
case "$1" in
  get-primary) cat "$d/primary" ;;
  # Like RAUC's U-Boot and GRUB backends, making a slot primary makes it bootable again.
  set-primary) echo "$2" > "$d/primary"; echo good > "$d/state.$2" ;;
  get-state) cat "$d/state.$2" 2>/dev/null || echo good ;;
  set-state) echo "$3" > "$d/state.$2" ;;
  get-current) cat "$d/current" ;;
  *) exit 1 ;;
esac
"""


class RaucBoard:
    """A device whose slots RAUC writes and switches; drive() power-cycles it."""

    def __init__(self, device: SimulatedDevice, tmp: Path, cert: Path) -> None:
        self.root = tmp
        self.boot = tmp / "boot"
        self.boot.mkdir(parents=True)
        (self.boot / "primary").write_text("A\n")
        (self.boot / "current").write_text("A\n")
        backend = tmp / "backend.sh"
        backend.write_text(BACKEND.format(boot=self.boot))
        backend.chmod(0o755)
        base = device.config
        (tmp / "mnt").mkdir()
        self.conf = tmp / "system.conf"
        self.conf.write_text(
            "[system]\ncompatible=fleetcast-test\nbootloader=custom\n"
            f"mountprefix={tmp / 'mnt'}\ndata-directory={tmp / 'data'}\n"
            "activate-installed=false\n\n"
            f"[handlers]\nbootloader-custom-backend={backend}\n\n"
            f"[keyring]\npath={cert}\n\n"
            f"[slot.rootfs.0]\ndevice={base.slots.a}\ntype=raw\nbootname=A\n\n"
            f"[slot.rootfs.1]\ndevice={base.slots.b}\ntype=raw\nbootname=B\n"
        )
        self.config = replace(
            base,
            bootloader=BootloaderConfig(
                type="rauc", rauc_conf=self.conf, trial_file=base.state_dir / "rauc-trial.json"
            ),
            installer=InstallerConfig(type="rauc"),
        )
        self.service: subprocess.Popen[bytes] | None = None
        self._start("A")

    def _start(self, bootname: str) -> None:
        self.stop()
        (self.boot / "current").write_text(bootname + "\n")
        self.service = subprocess.Popen(
            ["rauc", "-c", str(self.conf), "service", f"--override-boot-slot={bootname}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            probe = subprocess.run(
                ["rauc", "-c", str(self.conf), "status", "--output-format=json"],
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.05)
        raise AssertionError("rauc service did not come up")

    def stop(self) -> None:
        if self.service is not None:
            self.service.terminate()
            self.service.wait(timeout=10)
            self.service = None

    def power_cycle(self) -> str:
        primary = (self.boot / "primary").read_text().strip()
        state = self.boot / f"state.{primary}"
        if state.exists() and state.read_text().strip() == "bad":
            primary = "A" if primary == "B" else "B"
        self._start(primary)
        return "a" if primary == "A" else "b"

    def booted_slot(self) -> str:
        return "a" if (self.boot / "current").read_text().strip() == "A" else "b"

    def slot_bytes(self, slot: str) -> bytes:
        return self.config.slots.path(slot).read_bytes()


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    require_tools("rauc", "dbus-daemon", "mksquashfs", "unsquashfs", "openssl")
    socket = tmp_path / "bus.sock"
    conf = tmp_path / "bus.conf"
    conf.write_text(BUS_CONF.format(socket=socket))
    daemon = subprocess.Popen(
        ["dbus-daemon", f"--config-file={conf}", "--nofork"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if socket.exists():
            break
        time.sleep(0.02)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={socket}")
    yield
    daemon.terminate()
    daemon.wait(timeout=10)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return make_cert(tmp_path / "pki", "fleetcast-rauc")


@pytest.fixture
def board(
    bus: None,
    make_device: Callable[..., SimulatedDevice],
    tmp_path: Path,
    keys: tuple[Path, Path],
) -> Iterator[RaucBoard]:
    if os.geteuid() != 0:
        pytest.skip("rauc install loop-mounts the bundle: needs root")
    made = RaucBoard(make_device(), tmp_path / "rauc", keys[0])
    yield made
    made.stop()


def _artifact(
    tmp_path: Path, key: Ed25519PrivateKey, keys: tuple[Path, Path], image: bytes
) -> object:
    bundle = make_raucb(tmp_path / "bundles", image=image, cert=keys[0], key=keys[1])
    return make_artifact(tmp_path / "art", key, image=bundle.read_bytes(), meta={"format": "raucb"})


def test_bootloader_maps_onto_rauc_status(board: RaucBoard) -> None:
    boot = make_bootloader(board.config.bootloader)
    assert isinstance(boot, RaucBootloader)
    assert boot.active_slot() == "a" and boot.committed_slot() == "a" and not boot.in_trial()
    boot.arm_trial("b")
    assert (board.boot / "primary").read_text().strip() == "B"
    assert boot.in_trial() and boot.committed_slot() == "a"
    boot.rollback()  # not booted yet: the running slot becomes primary again
    assert (board.boot / "primary").read_text().strip() == "A" and not boot.in_trial()


def test_agent_updates_through_rauc(
    board: RaucBoard,
    api: FakeApi,
    tmp_path: Path,
    keys: tuple[Path, Path],
    vendor_key: Ed25519PrivateKey,
) -> None:
    """A Fleetcast artifact carrying a RAUC bundle: verified and spooled by the agent,
    written to slot B by `rauc install` (which does not activate it: activate-installed=false),
    armed with `rauc status mark-active`, booted, marked good: committed."""
    image = noisy_image("1.1.0", MiB)
    artifact = _artifact(tmp_path, vendor_key, keys, image)
    api.offer(artifact)  # type: ignore[arg-type]
    results = drive(board, api)  # type: ignore[arg-type]
    assert results[-1] is StepResult.UPDATED, api.final
    assert board.booted_slot() == "b" and board.slot_bytes("b") == image
    assert (board.boot / "state.B").read_text().strip() == "good"
    assert (board.boot / "primary").read_text().strip() == "B"
    assert not (board.config.state_dir / "update.raucb").exists()
    assert not board.config.bootloader.trial_file.exists()  # type: ignore[union-attr]
    assert InstalledArtifacts(board.config.state_dir).get("b") is not None


def test_failed_health_check_marks_the_slot_bad_and_goes_back(
    board: RaucBoard,
    api: FakeApi,
    tmp_path: Path,
    keys: tuple[Path, Path],
    vendor_key: Ed25519PrivateKey,
) -> None:
    from fleetcast.agent.config import HealthConfig

    board.config = replace(board.config, health=HealthConfig(commands=(("false",),)))
    api.offer(_artifact(tmp_path, vendor_key, keys, noisy_image("1.1.0", MiB)))  # type: ignore[arg-type]
    results = drive(board, api)  # type: ignore[arg-type]
    assert results[-1] is StepResult.ROLLED_BACK
    assert board.booted_slot() == "a"
    assert (board.boot / "state.B").read_text().strip() == "bad"
    assert (board.boot / "primary").read_text().strip() == "A"
    assert api.final["dep-1"].rolled_back


def test_bundle_rauc_refuses_fails_the_update_without_arming(
    board: RaucBoard,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
) -> None:
    """The bundle is signed by a key RAUC's keyring does not trust: Fleetcast's own
    signature is fine, RAUC refuses; the update fails, slot A stays primary."""
    intruder = make_cert(tmp_path / "intruder", "intruder")
    api.offer(_artifact(tmp_path, vendor_key, intruder, noisy_image("1.1.0", MiB)))  # type: ignore[arg-type]
    results = drive(board, api)  # type: ignore[arg-type]
    assert results[-1] is StepResult.FAILED
    assert "RAUC refused the bundle" in (api.final["dep-1"].message or "")
    assert (board.boot / "primary").read_text().strip() == "A"
