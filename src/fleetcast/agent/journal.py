"""The agent's state journal: what update is in progress and how far it got.

The journal is one JSON file, ``<state_dir>/journal.json``, replaced
atomically on every change (temp file, fsync, ``os.replace``, fsync of the
directory; see :mod:`fleetcast.agent.atomicfile`). The agent keeps no state
that matters anywhere else: a fresh process (after a kill, a reboot or a
power cut) reads the journal, looks at the bootloader, and carries on.

It holds:

- ``phase``: where the update is in the state machine (:class:`Phase`);
- ``update``: the offer being installed (manifest envelope, artifact id,
  URL, size, sha256), the target and previous slot, and the download resume
  point (artifact offset of the payload data, plus the decoder's last frame
  boundary as compressed and output offsets, plus the HTTP validator used
  for ``If-Range``);
- for an in-place update (``files`` / ``script`` payloads, no reboot): the
  ``files`` payloads whose ``dest`` did not exist before (``new_dests``),
  those whose switch has begun (``switched``, written *before* the first
  rename), and the reason of a failure being rolled back (``failure``);
- ``log``: a bounded tail of what the agent did, sent with a failure report;
- ``reports``: the status reports that must still reach the server, oldest
  first (a bounded queue, see :meth:`JournalState.queued`), sent in order and
  each removed only once the server took it (re-sent after a crash; the
  server treats a repeat as a no-op), and ``last_report``: the last one that
  did;
- ``report_seq``: the last report sequence number handed out. Every queued
  report (and every best-effort progress report) carries the next one, so the
  server can tell a late, overtaken request from a new report. It is
  journaled before the report leaves the device, so it never goes back.

Journals written before the queue existed hold one ``pending_report``; it
loads as a queue of that one report (without a ``seq``, which the server
accepts as before).

A journal that cannot be read (corrupt, truncated by a broken file system,
written by an incompatible version) must not brick the device: :meth:`Journal.load`
moves it aside, returns an idle state, and sets :attr:`Journal.problem`;
the agent then keeps booting the committed slot and logs why.
"""

from __future__ import annotations

import contextlib
import enum
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from fleetcast.agent import durable
from fleetcast.agent.atomicfile import write_atomic
from fleetcast.agent.slots import InstalledTarget, SlotContent
from fleetcast.core.wire import StatusReport, UpdateOffer
from fleetcast.exceptions import InvalidDataError, ValidationError

JOURNAL_FILE: Final = "journal.json"
JOURNAL_FORMAT: Final = 1
#: Undelivered status reports kept at most. One update queues at most four status
#: changes (downloading, installing, rebooting, the final one) before the queue must
#: be empty again for the next offer, so only repeated progress ever needs collapsing.
MAX_QUEUED_REPORTS: Final = 32


class Phase(enum.StrEnum):
    """Where an update is. Each phase is journaled before its work is assumed done."""

    IDLE = "idle"
    """No update in progress (a terminal report may still be pending)."""
    DOWNLOADING = "downloading"
    """Offer verified; streaming into the inactive slot (resumable)."""
    INSTALLED = "installed"
    """The inactive slot holds the complete, verified image; trial not armed yet."""
    ARMED = "armed"
    """The bootloader will try the new slot on the next boot."""
    TESTING = "testing"
    """Running from the new slot in a trial boot: health checks."""
    COMMITTING = "committing"
    """Health checks passed; making the new slot permanent."""
    ROLLING_BACK = "rolling-back"
    """Health checks failed; going back to the previous slot (or files)."""
    SWITCHING = "switching"
    """In-place update: staged ``files`` are being swapped in and scripts run."""


@dataclass(frozen=True)
class ResumePoint:
    """A safe place to continue a download: a frame boundary already on disk."""

    data_offset: int
    compressed: int
    output: int
    validator: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_offset": self.data_offset,
            "compressed": self.compressed,
            "output": self.output,
            "validator": self.validator,
        }

    @classmethod
    def from_dict(cls, data: object) -> ResumePoint:
        """Raises: ValidationError: a field is missing or invalid."""
        if not isinstance(data, dict):
            raise ValidationError("journal: resume point must be an object")
        values = [data.get(k) for k in ("data_offset", "compressed", "output")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ValidationError("journal: resume offsets must be non-negative integers")
        validator = data.get("validator")
        if validator is not None and not isinstance(validator, str):
            raise ValidationError("journal: resume validator must be a string")
        return cls(int(values[0]), int(values[1]), int(values[2]), validator)  # type: ignore[arg-type]


def _content_to_dict(content: SlotContent | None) -> dict[str, str] | None:
    return None if content is None else {"name": content.name, "version": content.version}


def _content_from_dict(data: object) -> SlotContent | None:
    if data is None:
        return None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("name"), str)
        or not isinstance(data.get("version"), str)
    ):
        raise ValidationError("journal: slot content must be {name, version}")
    return SlotContent(data["name"], data["version"])


@dataclass(frozen=True)
class UpdateInProgress:
    """The update the journal is about.

    For an in-place update (no ``rootfs-image``) ``target_slot`` is the
    running slot and ``previous`` the installed artifact of the same name.
    """

    offer: UpdateOffer
    target_slot: str
    previous_slot: str
    previous: SlotContent | None = None
    resume: ResumePoint | None = None
    download_attempts: int = 0
    new_dests: tuple[str, ...] = ()
    switched: tuple[str, ...] = ()
    failure: str | None = None
    # The offered delta failed or was refused: only the full artifact from now on.
    delta_abandoned: bool = False
    # The TUF target the offer was verified against ([trust] on), recorded at commit.
    # Optional on disk: journals written before ADR 0008 have none.
    target: InstalledTarget | None = None

    @property
    def deployment_id(self) -> str:
        return self.offer.deployment_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "offer": self.offer.to_dict(),
            "target_slot": self.target_slot,
            "previous_slot": self.previous_slot,
            "previous": _content_to_dict(self.previous),
            "resume": None if self.resume is None else self.resume.to_dict(),
            "download_attempts": self.download_attempts,
            "new_dests": list(self.new_dests),
            "switched": list(self.switched),
            "failure": self.failure,
            "delta_abandoned": self.delta_abandoned,
            **({} if self.target is None else {"target": self.target.to_dict()}),
        }

    @classmethod
    def from_dict(cls, data: object) -> UpdateInProgress:
        """Raises: InvalidDataError: a field is missing or invalid."""
        if not isinstance(data, dict):
            raise ValidationError("journal: update must be an object")
        target, previous = data.get("target_slot"), data.get("previous_slot")
        if target not in ("a", "b") or previous not in ("a", "b") or target == previous:
            raise ValidationError("journal: target and previous slot must be 'a' and 'b'")
        attempts = data.get("download_attempts", 0)
        if not isinstance(attempts, int):
            raise ValidationError("journal: download_attempts must be an integer")
        resume = data.get("resume")
        names = {key: data.get(key, []) for key in ("new_dests", "switched")}
        for key, value in names.items():
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                raise ValidationError(f"journal: {key} must be a list of payload names")
        failure = data.get("failure")
        if failure is not None and not isinstance(failure, str):
            raise ValidationError("journal: failure must be a string")
        tuf_target = InstalledTarget.from_dict(data.get("target"))
        if data.get("target") is not None and tuf_target is None:
            raise ValidationError("journal: target must be {path, sha256, release_counter}")
        return cls(
            offer=UpdateOffer.from_dict(data.get("offer")),
            target_slot=str(target),
            previous_slot=str(previous),
            previous=_content_from_dict(data.get("previous")),
            resume=None if resume is None else ResumePoint.from_dict(resume),
            download_attempts=attempts,
            new_dests=tuple(names["new_dests"]),
            switched=tuple(names["switched"]),
            failure=failure,
            delta_abandoned=data.get("delta_abandoned", False) is True,
            target=tuf_target,
        )


@dataclass(frozen=True)
class AddressedReport:
    """A status report and the deployment it belongs to."""

    deployment_id: str
    report: StatusReport

    def to_dict(self) -> dict[str, Any]:
        return {"deployment_id": self.deployment_id, "report": self.report.to_dict()}

    @classmethod
    def from_dict(cls, data: object) -> AddressedReport:
        """Raises: ValidationError: a field is missing or invalid."""
        if not isinstance(data, dict) or not isinstance(data.get("deployment_id"), str):
            raise ValidationError("journal: report needs a deployment_id")
        return cls(data["deployment_id"], StatusReport.from_dict(data.get("report")))


@dataclass(frozen=True)
class JournalState:
    """One consistent snapshot of the journal."""

    phase: Phase = Phase.IDLE
    update: UpdateInProgress | None = None
    log: tuple[str, ...] = ()
    reports: tuple[AddressedReport, ...] = ()
    last_report: AddressedReport | None = None
    report_seq: int = 0
    unrecognized_fields: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.phase is Phase.IDLE) != (self.update is None):
            raise ValidationError(
                f"journal: phase {self.phase.value} and update "
                f"{'missing' if self.update is None else 'present'} do not fit"
            )

    def logged(self, line: str, *, max_lines: int) -> JournalState:
        """Return a copy with ``line`` appended to the bounded log tail."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return replace(self, log=(*self.log, f"{stamp} {line}")[-max_lines:])

    def queued(self, report: AddressedReport) -> JournalState:
        """Return a copy with ``report`` at the end of the queue, numbered with the next seq.

        Past :data:`MAX_QUEUED_REPORTS` each run of reports of one status that
        differ only in progress shrinks to its first (the status change) and
        its last (the latest progress); a status change or a final report is
        never dropped for that.
        """
        seq = self.report_seq + 1
        entry = AddressedReport(report.deployment_id, replace(report.report, seq=seq))
        return replace(self, reports=_bounded((*self.reports, entry)), report_seq=seq)

    def requeued(self, report: AddressedReport) -> JournalState:
        """Return a copy with an already numbered ``report`` queued again, ``seq`` kept.

        For a report the server may have lost: a repeat of the same ``seq`` is
        a no-op for a server that has it.
        """
        return replace(self, reports=_bounded((*self.reports, report)))

    def without_reports_for(self, deployment_id: str) -> JournalState:
        """Return a copy whose queue holds no report for ``deployment_id`` any more."""
        kept = tuple(r for r in self.reports if r.deployment_id != deployment_id)
        return replace(self, reports=kept)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unrecognized_fields,
            "format": JOURNAL_FORMAT,
            "phase": self.phase.value,
            "update": None if self.update is None else self.update.to_dict(),
            "log": list(self.log),
            "reports": [report.to_dict() for report in self.reports],
            "last_report": None if self.last_report is None else self.last_report.to_dict(),
            "report_seq": self.report_seq,
        }

    @classmethod
    def from_dict(cls, data: object) -> JournalState:
        """Raises: InvalidDataError: the journal is malformed."""
        if not isinstance(data, dict):
            raise ValidationError("journal must be a JSON object")
        if data.get("format") != JOURNAL_FORMAT:
            raise ValidationError(f"journal format {data.get('format')!r} is not supported")
        try:
            phase = Phase(str(data.get("phase")))
        except ValueError as e:
            raise ValidationError(f"journal: unknown phase {data.get('phase')!r}") from e
        log = data.get("log", [])
        if not isinstance(log, list) or not all(isinstance(line, str) for line in log):
            raise ValidationError("journal: log must be a list of strings")
        update, last = data.get("update"), data.get("last_report")
        reports = data.get("reports")
        if reports is None:
            # Written before the queue: at most one report was pending.
            pending = data.get("pending_report")
            reports = [] if pending is None else [pending]
        if not isinstance(reports, list):
            raise ValidationError("journal: reports must be a list")
        seq = data.get("report_seq", 0)
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValidationError("journal: report_seq must be a non-negative integer")
        known = {
            "format",
            "phase",
            "update",
            "log",
            "reports",
            "pending_report",
            "last_report",
            "report_seq",
        }
        return cls(
            phase=phase,
            update=None if update is None else UpdateInProgress.from_dict(update),
            log=tuple(log),
            reports=tuple(AddressedReport.from_dict(r) for r in reports),
            last_report=None if last is None else AddressedReport.from_dict(last),
            report_seq=seq,
            unrecognized_fields={k: v for k, v in data.items() if k not in known},
        )


def seq_after_loss() -> int:
    """The report seq to count on from when the journal, and its counter, were lost.

    The server ignores a report whose seq is not above the highest it has
    recorded for the device in a deployment, so a counter starting again at
    zero would go unheard until it caught up. The wall clock in milliseconds
    is above every seq handed out before (at most one report per journal
    write, far fewer than one per millisecond) if the clock is about right;
    if it is not, the server still records the final report, which it never
    ignores for its seq.
    """
    return max(0, time.time_ns() // 1_000_000)


def _same_step(a: AddressedReport, b: AddressedReport) -> bool:
    """Whether ``a`` and ``b`` say the same about the same deployment, progress aside."""
    return a.deployment_id == b.deployment_id and replace(
        a.report, progress=None, seq=None
    ) == replace(b.report, progress=None, seq=None)


def _bounded(queue: tuple[AddressedReport, ...]) -> tuple[AddressedReport, ...]:
    """The queue cut to :data:`MAX_QUEUED_REPORTS` (see :meth:`JournalState.queued`)."""
    if len(queue) <= MAX_QUEUED_REPORTS:
        return queue
    # A report between two of the same step only moved the progress, and the
    # next one moves it further: the server would keep the later value anyway.
    kept = [
        report
        for i, report in enumerate(queue)
        if not (
            0 < i < len(queue) - 1
            and not report.report.status.terminal
            and _same_step(queue[i - 1], report)
            and _same_step(report, queue[i + 1])
        )
    ]
    # Only status changes left and still too many: cannot happen while one update
    # at a time queues at most four. Keep the journal bounded anyway, newest first.
    while len(kept) > MAX_QUEUED_REPORTS:
        oldest = next((i for i, r in enumerate(kept) if not r.report.status.terminal), 0)
        del kept[oldest]
    return tuple(kept)


class Journal:
    """Loads and atomically saves the journal file.

    Args:
        state_dir: the agent's state directory.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOURNAL_FILE
        self.problem: str | None = None

    def load(self) -> JournalState:
        """Return the journal, or an idle state if there is none or it is unreadable.

        An unreadable journal is renamed to ``journal.json.corrupt`` (kept for
        diagnosis) and described in :attr:`problem`.
        """
        self.problem = None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return JournalState()
        except OSError as e:
            self.problem = f"journal {self.path} is unreadable: {e}"
            return JournalState()
        try:
            return JournalState.from_dict(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, ValueError, InvalidDataError) as e:
            self.problem = f"journal {self.path} is corrupt ({e}); it was moved aside"
            with contextlib.suppress(OSError):
                durable.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))
            return JournalState()

    def save(self, state: JournalState) -> None:
        """Replace the journal with ``state`` (atomic and durable).

        Raises:
            DeviceStateError: the journal cannot be written.
        """
        write_atomic(self.path, json.dumps(state.to_dict(), indent=1, sort_keys=True).encode())


__all__ = [
    "JOURNAL_FILE",
    "MAX_QUEUED_REPORTS",
    "AddressedReport",
    "Journal",
    "JournalState",
    "Phase",
    "ResumePoint",
    "UpdateInProgress",
    "seq_after_loss",
]
