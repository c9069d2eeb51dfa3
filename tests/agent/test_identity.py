"""The device key: created once (0600), then reused; a corrupt key is not silently replaced."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fleetcast.agent.identity import KEY_FILE, load_or_create_device_key
from fleetcast.core.signing import key_id
from fleetcast.exceptions import DeviceStateError


def test_created_once_then_loaded(tmp_path: Path) -> None:
    first = load_or_create_device_key(tmp_path / "state")
    path = tmp_path / "state" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_or_create_device_key(tmp_path / "state")
    assert key_id(first.public_key()) == key_id(second.public_key())


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    load_or_create_device_key(tmp_path)
    (tmp_path / KEY_FILE).chmod(0o644)
    load_or_create_device_key(tmp_path)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


def test_corrupt_key_is_an_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_bytes(b"garbage")
    with pytest.raises(DeviceStateError, match="corrupt"):
        load_or_create_device_key(tmp_path)
    assert (tmp_path / KEY_FILE).read_bytes() == b"garbage"
