"""Simulated U-Boot: the A/B switch and the boot counter behave like the real thing."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetcast.agent.bootloader import (
    BROKEN_IMAGE_MARKER,
    Bootloader,
    SimulatedUBoot,
    simulate_boot,
)
from fleetcast.exceptions import DeviceStateError


@pytest.fixture
def uboot(tmp_path: Path) -> SimulatedUBoot:
    (tmp_path / "a.img").write_bytes(b"kernel A")
    (tmp_path / "b.img").write_bytes(b"kernel B")
    boot = SimulatedUBoot.create(
        tmp_path / "uboot.env", slot_a=tmp_path / "a.img", slot_b=tmp_path / "b.img"
    )
    simulate_boot(boot.env_file)
    return boot


def test_it_implements_the_protocol(uboot: SimulatedUBoot) -> None:
    assert isinstance(uboot, Bootloader)


def test_trial_then_commit(uboot: SimulatedUBoot) -> None:
    """Arm B, reboot: B runs on trial with bootcount 1; commit makes B the default."""
    assert uboot.active_slot() == "a" and uboot.committed_slot() == "a"
    uboot.arm_trial("b")
    assert uboot.in_trial() and uboot.committed_slot() == "a"
    assert simulate_boot(uboot.env_file) == "b"
    assert uboot.environment()["bootcount"] == "1"
    uboot.commit()
    assert not uboot.in_trial() and uboot.committed_slot() == "b"
    assert simulate_boot(uboot.env_file) == "b"
    assert uboot.environment()["bootcount"] == "0"


def test_rollback_returns_to_the_committed_slot(uboot: SimulatedUBoot) -> None:
    uboot.arm_trial("b")
    simulate_boot(uboot.env_file)
    uboot.rollback()
    assert not uboot.in_trial()
    assert simulate_boot(uboot.env_file) == "a"


def test_bootcount_exhaustion_falls_back(uboot: SimulatedUBoot) -> None:
    """A trial that is never committed (the agent keeps dying): after bootlimit (3)
    boots of B, U-Boot's altbootcmd boots A again and ends the trial."""
    uboot.arm_trial("b")
    assert [simulate_boot(uboot.env_file) for _ in range(4)] == ["b", "b", "b", "a"]
    assert not uboot.in_trial()
    assert uboot.environment()["boot_part"] == "a"


def test_broken_image_panics_until_the_fallback(uboot: SimulatedUBoot, tmp_path: Path) -> None:
    """Slot B panics at boot: one power-on retries it up to the limit, then boots A."""
    (tmp_path / "b.img").write_bytes(BROKEN_IMAGE_MARKER + b" kernel")
    uboot.arm_trial("b")
    assert simulate_boot(uboot.env_file) == "a"
    assert not uboot.in_trial()


def test_no_bootable_slot_is_reported(uboot: SimulatedUBoot, tmp_path: Path) -> None:
    (tmp_path / "a.img").write_bytes(b"")
    with pytest.raises(DeviceStateError, match="does not boot"):
        simulate_boot(uboot.env_file)


def test_refuses_to_arm_or_commit_the_wrong_slot(uboot: SimulatedUBoot) -> None:
    with pytest.raises(DeviceStateError, match="running slot"):
        uboot.arm_trial("a")
    uboot.arm_trial("b")
    with pytest.raises(DeviceStateError, match="cannot commit"):
        uboot.commit()  # still running A: committing would make B permanent unseen


def test_environment_is_replaced_atomically(uboot: SimulatedUBoot) -> None:
    uboot.arm_trial("b")
    assert not list(uboot.env_file.parent.glob(".*.tmp"))
    assert "upgrade_available=1" in uboot.env_file.read_text()
