"""SWUpdate as the slot writer, with the real swupdate on file-backed slots, under a
U-Boot board (real fw_setenv) that keeps the boot switch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice, StepResult
from fleetcast.agent.config import InstallerConfig
from fleetcast.agent.installers import SwupdateInstaller
from fleetcast.exceptions import DeviceStateError
from tests.agent.boards import UBootBoard, require_tools
from tests.agent.bundles import make_cert, make_swu
from tests.agent.conftest import FakeApi, MiB, drive, noisy_image
from tests.factories import make_artifact

HW = "fleetcast-test:1.0"


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_tools("swupdate", "openssl", "fw_printenv", "fw_setenv")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return make_cert(tmp_path / "pki")


def _installer(spool: Path, cert: Path) -> SwupdateInstaller:
    spool.mkdir(parents=True, exist_ok=True)
    return SwupdateInstaller(
        select=("stable,copy1", "stable,copy2"),
        spool=spool,
        timeout=120,
        args=("-k", str(cert), "-H", HW),
    )


def test_swupdate_writes_the_selected_slot(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    cert, key = keys
    slot_a, slot_b = tmp_path / "a.img", tmp_path / "b.img"
    for slot in (slot_a, slot_b):
        slot.write_bytes(b"\0" * (2 * MiB))
    image = noisy_image("1.1.0", MiB)
    swu = make_swu(tmp_path / "swu", image=image, slot_a=slot_a, slot_b=slot_b, cert=cert, key=key)
    log: list[str] = []
    _installer(tmp_path / "spool", cert).write(swu, "b", log.append)
    assert slot_b.read_bytes()[: len(image)] == image
    assert slot_a.read_bytes() == b"\0" * (2 * MiB)
    assert any("SWUpdate wrote stable,copy2 into slot b" in line for line in log)
    assert not (tmp_path / "spool" / "swupdate-tmp").exists()


@pytest.mark.parametrize("problem", ["hash", "signature", "hardware"])
def test_swupdate_refusal_is_a_device_error_with_its_reason(
    tmp_path: Path, keys: tuple[Path, Path], problem: str
) -> None:
    """SWUpdate's own checks still apply: an image whose hash differs from sw-description,
    a .swu signed by another key, or another hardware revision is refused, slot untouched."""
    cert = keys[0]
    slot_a, slot_b = tmp_path / "a.img", tmp_path / "b.img"
    for slot in (slot_a, slot_b):
        slot.write_bytes(b"\0" * (2 * MiB))
    signer = make_cert(tmp_path / "other", "intruder") if problem == "signature" else keys
    swu = make_swu(
        tmp_path / "swu",
        image=noisy_image("1.1.0", MiB),
        slot_a=slot_a,
        slot_b=slot_b,
        cert=signer[0],
        key=signer[1],
        declared_sha256="0" * 64 if problem == "hash" else None,
        hardware="2.0" if problem == "hardware" else "1.0",
    )
    log: list[str] = []
    with pytest.raises(DeviceStateError, match="SWUpdate refused"):
        _installer(tmp_path / "spool", cert).write(swu, "b", log.append)
    assert log, "SWUpdate's output reaches the log tail"
    if problem != "hash":  # with a bad hash SWUpdate has streamed the image before it checks
        assert slot_b.read_bytes() == b"\0" * (2 * MiB)


def _swupdate_board(
    make_device: Callable[..., SimulatedDevice], cert: Path, **device: object
) -> UBootBoard:
    board = UBootBoard(make_device(**device))
    installer = InstallerConfig(type="swupdate", args=("-k", str(cert), "-H", HW))
    board.config = replace(board.config, installer=installer)
    return board


def test_agent_updates_through_swupdate_and_u_boot(
    make_device: Callable[..., SimulatedDevice],
    api: FakeApi,
    tmp_path: Path,
    keys: tuple[Path, Path],
    vendor_key: Ed25519PrivateKey,
) -> None:
    """A Fleetcast artifact carrying a .swu: the agent verifies and spools it, SWUpdate
    writes slot b (copy2), the agent arms U-Boot, boots it, commits; the spool is gone."""
    cert, key = keys
    board = _swupdate_board(make_device, cert)
    image = noisy_image("1.1.0", MiB)
    swu = make_swu(
        tmp_path / "swu",
        image=image,
        slot_a=board.slot_path("a"),
        slot_b=board.slot_path("b"),
        cert=cert,
        key=key,
    )
    artifact = make_artifact(
        tmp_path / "art", vendor_key, image=swu.read_bytes(), meta={"format": "swu"}
    )
    api.offer(artifact)
    results = drive(board, api)  # type: ignore[arg-type]
    assert results[-1] is StepResult.UPDATED, api.final
    assert board.booted_slot() == "b"
    assert board.slot_bytes("b")[: len(image)] == image
    assert board.env.read()["upgrade_available"] == "0"
    assert not (board.config.state_dir / "update.swu").exists()


def test_swupdate_failure_fails_the_update_without_arming(
    make_device: Callable[..., SimulatedDevice],
    api: FakeApi,
    tmp_path: Path,
    keys: tuple[Path, Path],
    vendor_key: Ed25519PrivateKey,
) -> None:
    cert, key = keys
    board = _swupdate_board(make_device, cert)
    swu = make_swu(
        tmp_path / "swu",
        image=noisy_image("1.1.0", MiB),
        slot_a=board.slot_path("a"),
        slot_b=board.slot_path("b"),
        cert=cert,
        key=key,
        hardware="9.9",
    )
    api.offer(
        make_artifact(tmp_path / "art", vendor_key, image=swu.read_bytes(), meta={"format": "swu"})
    )
    results = drive(board, api)  # type: ignore[arg-type]
    assert results[-1] is StepResult.FAILED
    assert board.env.read()["upgrade_available"] == "0" and board.booted_slot() == "a"
    final = api.final["dep-1"]
    assert "SWUpdate refused" in (final.message or "") and not final.rolled_back
    assert any("not compatible with hardware" in line for line in final.log_tail)


def test_raw_image_is_refused_by_a_swupdate_device_before_download(
    make_device: Callable[..., SimulatedDevice],
    api: FakeApi,
    tmp_path: Path,
    keys: tuple[Path, Path],
    vendor_key: Ed25519PrivateKey,
) -> None:
    board = _swupdate_board(make_device, keys[0])
    api.offer(make_artifact(tmp_path / "art", vendor_key, image=noisy_image("1.1.0", MiB)))
    results = drive(board, api)  # type: ignore[arg-type]
    assert results[-1] is StepResult.FAILED
    assert "needs meta format='swu'" in (api.final["dep-1"].message or "")
    assert api.sources == []
