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
- ``pending_report``: the status report that must still reach the server
  (re-sent after a crash; the server treats a repeat as a no-op), and
  ``last_report``: the last one that did.

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
from fleetcast.agent.slots import SlotContent
from fleetcast.core.wire import StatusReport, UpdateOffer
from fleetcast.exceptions import InvalidDataError, ValidationError

JOURNAL_FILE: Final = "journal.json"
JOURNAL_FORMAT: Final = 1


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
    pending_report: AddressedReport | None = None
    last_report: AddressedReport | None = None
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

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unrecognized_fields,
            "format": JOURNAL_FORMAT,
            "phase": self.phase.value,
            "update": None if self.update is None else self.update.to_dict(),
            "log": list(self.log),
            "pending_report": None
            if self.pending_report is None
            else self.pending_report.to_dict(),
            "last_report": None if self.last_report is None else self.last_report.to_dict(),
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
        update, pending, last = (
            data.get("update"),
            data.get("pending_report"),
            data.get("last_report"),
        )
        known = {"format", "phase", "update", "log", "pending_report", "last_report"}
        return cls(
            phase=phase,
            update=None if update is None else UpdateInProgress.from_dict(update),
            log=tuple(log),
            pending_report=None if pending is None else AddressedReport.from_dict(pending),
            last_report=None if last is None else AddressedReport.from_dict(last),
            unrecognized_fields={k: v for k, v in data.items() if k not in known},
        )


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
    "AddressedReport",
    "Journal",
    "JournalState",
    "Phase",
    "ResumePoint",
    "UpdateInProgress",
]
