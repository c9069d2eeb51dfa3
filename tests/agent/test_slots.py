"""Slot writing: resumable at an offset, synced, truncated to size; the per-slot record."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetcast.agent.slots import InstalledArtifacts, SlotContent, SlotWriter, read_slot_prefix
from fleetcast.exceptions import DeviceStateError


def test_write_at_offset_keeps_the_prefix_and_truncates(tmp_path: Path) -> None:
    slot = tmp_path / "slot.img"
    slot.write_bytes(b"A" * 10 + b"old tail that must go")
    with SlotWriter(slot, offset=4, max_size=8) as writer:
        writer.write(b"BBBB")
        writer.finish(8)
    assert slot.read_bytes() == b"AAAABBBB"


def test_sync_calls_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    with SlotWriter(tmp_path / "s", offset=0, max_size=1) as writer:
        writer.write(b"x")
        writer.sync()
    assert len(synced) == 1


def test_read_prefix(tmp_path: Path) -> None:
    slot = tmp_path / "s"
    slot.write_bytes(bytes(range(100)))
    assert b"".join(read_slot_prefix(slot, 50, chunk=7)) == bytes(range(50))
    with pytest.raises(DeviceStateError, match="ends before"):
        list(read_slot_prefix(slot, 200, chunk=64))


def test_unwritable_slot(tmp_path: Path) -> None:
    with pytest.raises(DeviceStateError, match="cannot open"):
        SlotWriter(tmp_path / "missing-dir" / "s", offset=0, max_size=1)


def test_installed_record(tmp_path: Path) -> None:
    record = InstalledArtifacts(tmp_path)
    assert record.get("a") is None
    record.set("a", SlotContent("fw", "1.0.0"))
    record.set("b", None)
    assert record.load() == {"a": SlotContent("fw", "1.0.0"), "b": None}


def test_corrupt_record_means_unknown_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "slots.json").write_text("{nope")
    record = InstalledArtifacts(tmp_path)
    assert record.load() == {"a": None, "b": None}
    assert record.problem is not None
