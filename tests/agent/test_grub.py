"""The GRUB backend with the real grub-editenv, and the shipped grub.cfg snippet run by
the real GRUB (grub-emu)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice, StepResult
from fleetcast.agent.bootloader import BROKEN_IMAGE_MARKER, make_bootloader
from fleetcast.agent.bootloaders import Grub, GrubEnv
from fleetcast.exceptions import DeviceStateError
from tests.agent.boards import PACKAGING, GrubBoard, grub_power_on, require_tools
from tests.agent.conftest import FakeApi, MiB, drive, noisy_image
from tests.factories import make_artifact

EMU = ("grub-emu", "mke2fs", "debugfs")


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_tools("grub-editenv")


def _env(tmp_path: Path, **values: str) -> GrubEnv:
    env = GrubEnv(tmp_path / "grubenv")
    env.create()
    if values:
        env.write(values)
    return env


def test_snippet_is_valid_grub_script() -> None:
    require_tools("grub-script-check")
    for name in ("fleetcast-ab.cfg", "grub.cfg.example"):
        subprocess.run(["grub-script-check", str(PACKAGING / "grub" / name)], check=True)


def test_write_is_atomic_and_verified(tmp_path: Path) -> None:
    env = _env(tmp_path, boot_part="a", upgrade_available="0")
    env.write({"boot_part": "b", "upgrade_available": "1", "bootcount": "0"})
    assert env.read() == {"boot_part": "b", "upgrade_available": "1", "bootcount": "0"}
    assert (tmp_path / "grubenv").stat().st_size == 1024
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grubenv"]


def test_missing_or_garbage_block_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DeviceStateError, match="does not exist"):
        GrubEnv(tmp_path / "grubenv").read()
    (tmp_path / "grubenv").write_bytes(b"not an environment block")
    with pytest.raises(DeviceStateError, match="cannot read"):
        GrubEnv(tmp_path / "grubenv").read()


def test_backend_follows_the_scheme(tmp_path: Path) -> None:
    _env(tmp_path, boot_part="a", upgrade_available="0", bootcount="0", bootlimit="3")
    (tmp_path / "cmdline").write_text("quiet fleetcast.slot=a bootcount=0\n")
    boot = Grub(tmp_path / "grubenv", cmdline=tmp_path / "cmdline")
    boot.arm_trial("b")
    assert boot.in_trial() and boot.committed_slot() == "a"
    boot.rollback()
    assert not boot.in_trial() and boot.environment()["boot_part"] == "a"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # (boot_part, upgrade_available, bootcount) before -> after one power-on
        (("a", "0", "0"), ("a", "0", "0")),
        (("b", "1", "0"), ("b", "1", "1")),
        (("b", "1", "2"), ("b", "1", "3")),
        (("b", "1", "3"), ("a", "0", "0")),  # bootlimit 3 used up: fall back
        (("a", "1", "3"), ("b", "0", "0")),
    ],
)
def test_real_grub_counts_boots_and_falls_back(
    tmp_path: Path, before: tuple[str, str, str], after: tuple[str, str, str]
) -> None:
    """grub-emu runs packaging/grub/fleetcast-ab.cfg: it increments bootcount during a
    trial and, past bootlimit, switches back and clears the trial, saving with save_env."""
    require_tools(*EMU)
    env = _env(
        tmp_path,
        boot_part=before[0],
        upgrade_available=before[1],
        bootcount=before[2],
        bootlimit="3",
    )
    args = grub_power_on(env.path, tmp_path / "emu")
    values = env.read()
    assert (values["boot_part"], values["upgrade_available"], values["bootcount"]) == after
    assert f"fleetcast.slot={after[0]}" in args


def test_full_update_commits_through_real_grub(
    make_device: Callable[..., SimulatedDevice],
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
) -> None:
    """1.1.0 reaches a GRUB board: the agent arms slot b with grub-editenv, the real GRUB
    boots it as a trial, the checks pass and the agent commits."""
    require_tools(*EMU)
    board = GrubBoard(make_device())
    assert isinstance(make_bootloader(board.config.bootloader), Grub)
    v11 = make_artifact(tmp_path / "art", vendor_key, image=noisy_image("1.1.0", MiB))
    api.offer(v11)
    results = drive(board, api)  # type: ignore[arg-type]
    assert results[-1] is StepResult.UPDATED
    assert board.booted_slot() == "b" and board.slot_bytes("b") == v11.image
    env = GrubEnv(board.grubenv).read()
    assert (env["boot_part"], env["upgrade_available"], env["bootcount"]) == ("b", "0", "0")


def test_image_that_never_boots_is_abandoned_by_real_grub(
    make_device: Callable[..., SimulatedDevice],
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
) -> None:
    require_tools(*EMU)
    board = GrubBoard(make_device())
    image = BROKEN_IMAGE_MARKER + noisy_image("1.1.0", MiB)
    api.offer(make_artifact(tmp_path / "art", vendor_key, image=image))
    results = drive(board, api)  # type: ignore[arg-type]
    assert results[-1] is StepResult.ROLLED_BACK
    assert board.booted_slot() == "a"
    assert GrubEnv(board.grubenv).read()["upgrade_available"] == "0"
