"""The journal survives crashes: atomic replacement, and a corrupt file never bricks the device."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fleetcast.agent.atomicfile import write_atomic
from fleetcast.agent.journal import (
    AddressedReport,
    Journal,
    JournalState,
    Phase,
    ResumePoint,
    UpdateInProgress,
)
from fleetcast.core.wire import DeviceUpdateStatus, StatusReport, UpdateOffer
from fleetcast.exceptions import ValidationError
from tests.factories import BuiltArtifact


def _offer(artifact: BuiltArtifact) -> UpdateOffer:
    return UpdateOffer("dep-1", "art-1", 1000, "0" * 64, "/x", artifact.signed)


def test_round_trip(tmp_path: Path, artifact_v2: BuiltArtifact) -> None:
    state = JournalState(
        phase=Phase.DOWNLOADING,
        update=UpdateInProgress(
            _offer(artifact_v2), "b", "a", resume=ResumePoint(1536, 100, 200, '"etag"')
        ),
        pending_report=AddressedReport("dep-1", StatusReport(DeviceUpdateStatus.DOWNLOADING)),
    ).logged("hello", max_lines=5)
    journal = Journal(tmp_path)
    journal.save(state)
    loaded = journal.load()
    assert journal.problem is None
    assert loaded == state
    assert loaded.update is not None
    assert loaded.update.offer.manifest.signed_bytes == artifact_v2.signed.signed_bytes


def test_log_tail_is_bounded() -> None:
    state = JournalState()
    for i in range(10):
        state = state.logged(f"line {i}", max_lines=3)
    assert [line.split(" ", 1)[1] for line in state.log] == ["line 7", "line 8", "line 9"]


def test_unknown_fields_are_kept(tmp_path: Path) -> None:
    """A journal written by a newer agent keeps its extra fields across a save."""
    journal = Journal(tmp_path)
    data = {**JournalState().to_dict(), "future": {"x": 1}}
    journal.path.write_text(json.dumps(data))
    journal.save(journal.load())
    assert json.loads(journal.path.read_text())["future"] == {"x": 1}


@pytest.mark.parametrize(
    "content",
    [b"", b"{\x00", b"[]", b'{"format": 99}', b'{"format": 1, "phase": "armed", "update": null}'],
)
def test_corrupt_journal_falls_back_to_idle(tmp_path: Path, content: bytes) -> None:
    """An unreadable journal: the agent starts idle, says why, and keeps the file aside."""
    journal = Journal(tmp_path)
    journal.path.write_bytes(content)
    assert journal.load() == JournalState()
    assert journal.problem is not None and "corrupt" in journal.problem
    assert (tmp_path / "journal.json.corrupt").read_bytes() == content


def test_missing_journal_is_idle_without_a_problem(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    assert journal.load().phase is Phase.IDLE and journal.problem is None


def test_phase_and_update_must_agree() -> None:
    with pytest.raises(ValidationError):
        JournalState(phase=Phase.ARMED)


def test_write_is_atomic_under_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between writing the temp file and the rename leaves the old journal intact."""
    path = tmp_path / "journal.json"
    write_atomic(path, b"old")

    def crash(src: object, dst: object) -> None:
        raise KeyboardInterrupt  # the process dies before the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    write_atomic(path, b"new")  # the stray temp file does not get in the way
    assert path.read_bytes() == b"new"
    assert not (tmp_path / ".journal.json.tmp").exists()


def test_syncs_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    write_atomic(tmp_path / "f", b"x")
    assert len(synced) == 2  # the temp file, then the directory


def test_in_place_fields_round_trip_and_default(tmp_path: Path, artifact_v2: BuiltArtifact) -> None:
    """The in-place switch state survives a save; a journal written before it existed loads."""
    update = UpdateInProgress(
        _offer(artifact_v2),
        "a",
        "b",
        new_dests=("data",),
        switched=("conf", "data"),
        failure="script payload x failed (exit 1)",
    )
    journal = Journal(tmp_path)
    journal.save(JournalState(phase=Phase.SWITCHING, update=update))
    assert journal.load().update == update
    raw = json.loads((tmp_path / "journal.json").read_text())
    for key in ("new_dests", "switched", "failure"):
        del raw["update"][key]
    write_atomic(tmp_path / "journal.json", json.dumps(raw).encode())
    loaded = journal.load().update
    assert loaded is not None and (loaded.switched, loaded.new_dests, loaded.failure) == (
        (),
        (),
        None,
    )
    raw["update"]["switched"] = "conf"
    write_atomic(tmp_path / "journal.json", json.dumps(raw).encode())
    assert journal.load().phase is Phase.IDLE and "switched" in (journal.problem or "")
