"""The U-Boot backend against the real fw_printenv / fw_setenv on file-backed environments."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import Agent, SimulatedDevice, StepResult
from fleetcast.agent.bootloader import BROKEN_IMAGE_MARKER, make_bootloader
from fleetcast.agent.bootloaders import UBoot, UBootEnv
from fleetcast.exceptions import DeviceStateError
from tests.agent.boards import PACKAGING, UBootBoard, require_tools
from tests.agent.conftest import FakeApi, MiB, drive, noisy_image
from tests.factories import make_artifact

FAIL = [["false"]]


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_tools("fw_printenv", "fw_setenv")


@pytest.fixture
def board(make_device: Callable[..., SimulatedDevice]) -> UBootBoard:
    return UBootBoard(make_device())


def test_shipped_environment_is_what_the_tools_and_the_backend_read(tmp_path: Path) -> None:
    """packaging/uboot/fleetcast-ab.env, made into a binary environment with mkenvimage as
    at the factory, is read by fw_printenv and the backend: slot a, committed, bootlimit 3."""
    require_tools("mkenvimage")
    env_file = tmp_path / "uboot.env"
    subprocess.run(
        [
            "mkenvimage",
            "-s",
            "0x4000",
            "-o",
            str(env_file),
            str(PACKAGING / "uboot/fleetcast-ab.env"),
        ],
        check=True,
    )
    config = tmp_path / "fw_env.config"
    config.write_text(f"{env_file} 0x0 0x4000\n")
    env = UBootEnv(config).read()
    assert env["boot_part"] == "a" and env["bootlimit"] == "3"
    assert "fleetcast.slot=${boot_part}" in env["fleetcast_select"]
    assert env["bootcmd"] == "run fleetcast_boot"
    assert not any(k.startswith("#") for k in env), "comments became variables"
    (tmp_path / "cmdline").write_text("fleetcast.slot=a\n")
    boot = UBoot(config, cmdline=tmp_path / "cmdline")
    assert boot.committed_slot() == "a" and not boot.in_trial()


def test_arm_commit_and_rollback_write_the_environment(board: UBootBoard) -> None:
    board.slot_path("b").write_bytes(b"a bootable image")
    boot = make_bootloader(board.config.bootloader)
    assert isinstance(boot, UBoot)
    assert boot.active_slot() == "a"
    with pytest.raises(DeviceStateError, match="running slot"):
        boot.arm_trial("a")
    boot.arm_trial("b")
    env = board.env.read()
    assert (env["boot_part"], env["upgrade_available"], env["bootcount"]) == ("b", "1", "0")
    assert boot.in_trial() and boot.committed_slot() == "a"
    assert board.power_cycle() == "b"
    assert board.env.read()["bootcount"] == "1"
    boot.commit()
    assert not boot.in_trial() and boot.committed_slot() == "b"
    assert board.env.read()["bootcount"] == "0"
    boot.arm_trial("a")
    boot.rollback()
    env = board.env.read()
    assert (env["boot_part"], env["upgrade_available"]) == ("b", "0")


def test_commit_refuses_when_the_bootloader_would_boot_another_slot(board: UBootBoard) -> None:
    boot = make_bootloader(board.config.bootloader)
    boot.arm_trial("b")  # armed, but still running a: committing would make b permanent
    with pytest.raises(DeviceStateError, match="cannot commit"):
        boot.commit()


def test_unreadable_environment_is_an_error_not_a_default(tmp_path: Path) -> None:
    """A blank environment (bad CRC) must never be silently replaced by defaults."""
    (tmp_path / "env").write_bytes(b"\0" * 0x4000)
    (tmp_path / "fw_env.config").write_text(f"{tmp_path / 'env'} 0x0 0x4000\n")
    with pytest.raises(DeviceStateError, match="cannot read the U-Boot environment"):
        UBootEnv(tmp_path / "fw_env.config").read()


def test_redundant_environment_keeps_the_old_copy_after_a_torn_write(
    make_device: Callable[..., SimulatedDevice],
) -> None:
    """Power is cut while fw_setenv writes the trial into the redundant environment: the
    copy it was writing is corrupt, so U-Boot and the agent still see the other, complete
    copy (no trial armed); a second write goes to the other copy and sticks."""
    board = UBootBoard(make_device(), redundant=True)
    boot = make_bootloader(board.config.bootloader)
    before = [c.read_bytes() for c in board.copies]
    boot.arm_trial("b")
    after = [c.read_bytes() for c in board.copies]
    written = [i for i in range(2) if before[i] != after[i]]
    assert len(written) == 1, "one environment write touches one copy"
    torn = board.copies[written[0]]
    data = bytearray(after[written[0]])
    data[100:200] = b"\xff" * 100  # a half-written sector
    torn.write_bytes(bytes(data))
    assert not boot.in_trial()
    assert board.env.read()["boot_part"] == "a"
    boot.arm_trial("b")
    assert boot.in_trial()


def test_full_update_commits_through_u_boot(
    board: UBootBoard, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """1.1.0 reaches a U-Boot board: written to slot b, trial armed with fw_setenv, U-Boot
    counts the boot, the checks pass, the agent commits; the environment ends committed."""
    v11 = make_artifact(tmp_path / "art", vendor_key, image=noisy_image("1.1.0", 2 * MiB))
    api.offer(v11)
    results = drive(board, api)  # type: ignore[arg-type]
    assert results[-1] is StepResult.UPDATED
    assert board.booted_slot() == "b" and board.slot_bytes("b") == v11.image
    env = board.env.read()
    assert (env["boot_part"], env["upgrade_available"], env["bootcount"]) == ("b", "0", "0")
    assert api.statuses()[-1] == "success"


def test_failed_health_check_rolls_back_through_u_boot(
    make_device: Callable[..., SimulatedDevice],
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
) -> None:
    board = UBootBoard(make_device(health_commands=FAIL))
    v11 = make_artifact(tmp_path / "art", vendor_key, image=noisy_image("1.1.0", MiB))
    api.offer(v11)
    results = drive(board, api)  # type: ignore[arg-type]
    assert results[-1] is StepResult.ROLLED_BACK
    assert board.booted_slot() == "a"
    assert board.env.read()["boot_part"] == "a"
    assert api.final["dep-1"].rolled_back


def test_image_that_never_boots_is_abandoned_by_the_boot_counter(
    board: UBootBoard, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """The new kernel panics at every boot: U-Boot tries it bootlimit (3) times, then
    altbootcmd goes back to slot a; the agent reports the failure, rolled back."""
    image = BROKEN_IMAGE_MARKER + noisy_image("1.1.0", MiB)
    v11 = make_artifact(tmp_path / "art", vendor_key, image=image)
    api.offer(v11)
    results = drive(board, api)  # type: ignore[arg-type]
    assert results[-1] is StepResult.ROLLED_BACK
    env = board.env.read()
    assert (env["boot_part"], env["upgrade_available"]) == ("a", "0")
    assert "did not boot" in (api.final["dep-1"].message or "")


def test_reboot_during_health_checks_retries_then_falls_back(
    make_device: Callable[..., SimulatedDevice],
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
) -> None:
    """The device reboots in the middle of its health checks, every time: each boot is
    counted by U-Boot, the agent runs the checks again, and after bootlimit boots U-Boot
    returns to slot a by itself; the update ends rolled back, never committed."""
    board = UBootBoard(make_device())
    v11 = make_artifact(tmp_path / "art", vendor_key, image=noisy_image("1.1.0", MiB))
    api.offer(v11)
    reboots = 0

    def reboot_in_checks(name: str) -> None:
        nonlocal reboots
        if name == "trial-started":
            reboots += 1
            raise _Reboot

    agent = Agent(board.config, client=api, on_transition=reboot_in_checks)
    for _ in range(20):
        try:
            result = agent.step()
        except _Reboot:
            result = StepResult.REBOOT_REQUIRED
        if result is StepResult.REBOOT_REQUIRED:
            board.power_cycle()
            agent = Agent(board.config, client=api, on_transition=reboot_in_checks)
        elif result is StepResult.ROLLED_BACK:
            break
    assert result is StepResult.ROLLED_BACK
    assert reboots == 3  # bootlimit
    assert board.booted_slot() == "a" and api.final["dep-1"].rolled_back


class _Reboot(BaseException):
    pass
