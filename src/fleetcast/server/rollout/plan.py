"""The deployment plan: phases, their validation, and who lands in which phase.

Pure functions, no I/O. A phase gives a cumulative share of the target,
either ``percent`` (of the compatible devices) or ``count`` (devices); the
last phase must be ``percent: 100``. Devices are ordered by
``sha256(deployment_id + device_id)``, which is deterministic (a restart or
a second process computes the same order) yet spreads every phase across
the fleet instead of picking the oldest devices first.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from fleetcast.server.errors import RequestInvalidError

#: A phase without ``max_failure_percent`` never pauses on its own (see the ADR).
DEFAULT_MAX_FAILURE_PERCENT: Final = 100
MAX_PHASES: Final = 32


@dataclass(frozen=True)
class Phase:
    """One rollout phase: its cumulative share, soak time and failure threshold."""

    percent: int | None = None
    count: int | None = None
    soak_seconds: int = 0
    max_failure_percent: int = DEFAULT_MAX_FAILURE_PERCENT

    def to_dict(self) -> dict[str, Any]:
        return {
            "percent": self.percent,
            "count": self.count,
            "soak_seconds": self.soak_seconds,
            "max_failure_percent": self.max_failure_percent,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Phase:
        return cls(
            percent=data.get("percent"),
            count=data.get("count"),
            soak_seconds=int(data.get("soak_seconds", 0)),
            max_failure_percent=int(data.get("max_failure_percent", DEFAULT_MAX_FAILURE_PERCENT)),
        )


def _bad(index: int, message: str) -> RequestInvalidError:
    return RequestInvalidError(
        f"phase {index + 1}: {message}", details={"field": "phases", "phase": index}
    )


def validate_phases(phases: Sequence[Phase]) -> None:
    """Check a plan.

    Raises:
        RequestInvalidError: no phases, too many, a phase without exactly one of
            percent/count, shares not increasing, or a last phase below 100%.
    """
    if not phases:
        raise RequestInvalidError(
            "a deployment needs at least one phase", details={"field": "phases"}
        )
    if len(phases) > MAX_PHASES:
        raise RequestInvalidError(f"at most {MAX_PHASES} phases", details={"field": "phases"})
    last_percent = last_count = 0
    for index, phase in enumerate(phases):
        if (phase.percent is None) == (phase.count is None):
            raise _bad(index, "give exactly one of 'percent' or 'count'")
        if phase.percent is not None:
            if not 1 <= phase.percent <= 100:
                raise _bad(index, "percent must be 1..100")
            if phase.percent <= last_percent:
                raise _bad(index, "percent is cumulative and must grow from phase to phase")
            last_percent = phase.percent
        if phase.count is not None:
            if phase.count < 1:
                raise _bad(index, "count must be at least 1")
            if phase.count <= last_count:
                raise _bad(index, "count is cumulative and must grow from phase to phase")
            last_count = phase.count
        if phase.soak_seconds < 0:
            raise _bad(index, "soak_seconds must not be negative")
        if not 0 <= phase.max_failure_percent <= 100:
            raise _bad(index, "max_failure_percent must be 0..100")
    if phases[-1].percent != 100:
        raise _bad(len(phases) - 1, "the last phase must cover the whole target (percent: 100)")


def phase_bounds(total: int, phases: Sequence[Phase]) -> list[int]:
    """Return, per phase, the cumulative number of devices it covers.

    Each raw bound is ``ceil(total * percent / 100)`` or ``min(count, total)``.
    Every phase then gets at least one device while there are devices left
    for the phases after it; with fewer devices than phases, the earlier
    phases get them. The last phase covers all.
    """
    bounds: list[int] = []
    previous = 0
    for index, phase in enumerate(phases):
        if phase.percent is not None:
            raw = math.ceil(total * phase.percent / 100)
        else:
            raw = min(phase.count or 0, total)
        later = len(phases) - index - 1
        # At least one device more than the phase before, while that leaves
        # one for each later phase; when it cannot, earlier phases win.
        bound = max(raw, previous + 1)
        bound = min(bound, max(total - later, previous + 1), total)
        bounds.append(bound)
        previous = bound
    if bounds:
        bounds[-1] = total
    return bounds


def rollout_order(deployment_id: str, device_ids: Sequence[str]) -> list[str]:
    """Order devices deterministically: by ``sha256(deployment_id + device_id)``."""
    return sorted(
        device_ids,
        key=lambda device_id: hashlib.sha256((deployment_id + device_id).encode()).hexdigest(),
    )


def assign_phases(
    deployment_id: str, device_ids: Sequence[str], phases: Sequence[Phase]
) -> list[tuple[str, int]]:
    """Return ``(device_id, phase_index)`` in rollout order."""
    ordered = rollout_order(deployment_id, device_ids)
    bounds = phase_bounds(len(ordered), phases)
    assigned: list[tuple[str, int]] = []
    phase = 0
    for position, device_id in enumerate(ordered):
        while phase < len(bounds) - 1 and position >= bounds[phase]:
            phase += 1
        assigned.append((device_id, phase))
    return assigned
