"""The journal survives crashes: atomic replacement, and a corrupt file never bricks the device."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from fleetcast.agent.atomicfile import write_atomic
from fleetcast.agent.journal import (
    MAX_QUEUED_REPORTS,
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
    ).queued(AddressedReport("dep-1", StatusReport(DeviceUpdateStatus.DOWNLOADING)))
    state = state.logged("hello", max_lines=5)
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


def _addressed(
    status: str, progress: int | None = None, deployment: str = "dep-1"
) -> AddressedReport:
    return AddressedReport(deployment, StatusReport(DeviceUpdateStatus(status), progress))


def test_reports_queue_in_order_with_growing_seq(tmp_path: Path) -> None:
    """Reports the server has not taken yet wait in the journal, oldest first, each with
    the next sequence number; the counter survives a save and keeps growing."""
    state = JournalState()
    for status in ("downloading", "installing", "rebooting"):
        state = state.queued(_addressed(status))
    journal = Journal(tmp_path)
    journal.save(state)
    loaded = journal.load()
    assert [(r.report.status.value, r.report.seq) for r in loaded.reports] == [
        ("downloading", 1),
        ("installing", 2),
        ("rebooting", 3),
    ]
    assert loaded.report_seq == 3
    assert loaded.queued(_addressed("success")).reports[-1].report.seq == 4


def test_journal_with_a_single_pending_report_loads_as_a_one_report_queue(
    tmp_path: Path,
) -> None:
    """A journal written by the agent before the queue (``pending_report``, no seq, no
    counter) loads: its report is the queue's only one, sent without a seq, and the
    counter starts at zero."""
    old = {
        "format": 1,
        "phase": "idle",
        "update": None,
        "log": ["2026-01-01T00:00:00Z committed slot b"],
        "pending_report": {
            "deployment_id": "dep-7",
            "report": {
                "status": "success",
                "progress": 100,
                "message": "",
                "log_tail": [],
                "rolled_back": False,
            },
        },
        "last_report": {
            "deployment_id": "dep-7",
            "report": {"status": "rebooting", "progress": None, "message": "", "log_tail": []},
        },
    }
    journal = Journal(tmp_path)
    write_atomic(journal.path, json.dumps(old).encode())
    state = journal.load()
    assert journal.problem is None
    assert state.reports == (
        AddressedReport("dep-7", StatusReport(DeviceUpdateStatus.SUCCESS, progress=100)),
    )
    assert state.last_report == AddressedReport("dep-7", StatusReport(DeviceUpdateStatus.REBOOTING))
    assert state.report_seq == 0 and state.unrecognized_fields == {}
    journal.save(state)
    saved = json.loads(journal.path.read_text())
    assert "pending_report" not in saved and len(saved["reports"]) == 1
    assert journal.load() == state
    old["pending_report"] = None
    write_atomic(journal.path, json.dumps(old).encode())
    assert journal.load().reports == ()


@pytest.mark.parametrize(
    ("key", "value"), [("reports", {"x": 1}), ("reports", [{"report": {}}]), ("report_seq", -1)]
)
def test_malformed_queue_is_a_corrupt_journal(tmp_path: Path, key: str, value: object) -> None:
    journal = Journal(tmp_path)
    write_atomic(journal.path, json.dumps({**JournalState().to_dict(), key: value}).encode())
    assert journal.load() == JournalState()
    assert journal.problem is not None and "corrupt" in journal.problem


def test_full_queue_collapses_progress_but_keeps_every_status_change() -> None:
    """A server away for long: the queue stays bounded. Progress-only reports of one
    status collapse to the first (the status change) and the latest progress; every
    status change and the final report stay, in order."""
    state = JournalState().queued(_addressed("downloading", 0))
    for percent in range(1, 60):
        state = state.queued(_addressed("downloading", percent))
    for status in ("installing", "rebooting"):
        state = state.queued(_addressed(status))
    state = state.queued(_addressed("success", 100))
    assert len(state.reports) <= MAX_QUEUED_REPORTS
    steps = [(r.report.status.value, r.report.progress) for r in state.reports]
    assert steps[0] == ("downloading", 0)
    assert steps[-4:] == [
        ("downloading", 59),
        ("installing", None),
        ("rebooting", None),
        ("success", 100),
    ]
    assert [s for s, _ in steps if s != "downloading"] == ["installing", "rebooting", "success"]
    seqs = [r.report.seq for r in state.reports]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert state.report_seq == 63


def test_queue_below_the_bound_keeps_every_report() -> None:
    state = JournalState()
    for percent in (10, 20, 30):
        state = state.queued(_addressed("downloading", percent))
    assert [r.report.progress for r in state.reports] == [10, 20, 30]


def test_requeued_report_keeps_its_seq_and_dropping_a_deployment_keeps_the_rest() -> None:
    state = JournalState().queued(_addressed("success", 100, "dep-1"))
    final = state.reports[0]
    state = replace(state, reports=(), last_report=final).queued(
        _addressed("downloading", 0, "dep-2")
    )
    again = state.requeued(final)
    assert again.reports[-1] == final and again.report_seq == state.report_seq == 2
    assert again.without_reports_for("dep-2").reports == (final,)
