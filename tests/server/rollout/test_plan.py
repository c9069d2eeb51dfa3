"""Phase planning, pure: how many devices each phase gets and in which order."""

from __future__ import annotations

import pytest

from fleetcast.server.errors import RequestInvalidError
from fleetcast.server.rollout.plan import (
    Phase,
    assign_phases,
    phase_bounds,
    rollout_order,
    validate_phases,
)


def _sizes(total: int, phases: list[Phase]) -> list[int]:
    bounds = phase_bounds(total, phases)
    return [b - a for a, b in zip([0, *bounds], bounds, strict=False)]


def test_percent_phases_round_up() -> None:
    phases = [Phase(percent=10), Phase(percent=50), Phase(percent=100)]
    assert _sizes(20, phases) == [2, 8, 10]
    assert _sizes(7, phases) == [1, 3, 3]  # ceil(0.7)=1, ceil(3.5)=4


def test_count_phases() -> None:
    assert _sizes(10, [Phase(count=1), Phase(count=3), Phase(percent=100)]) == [1, 2, 7]
    assert _sizes(2, [Phase(count=5), Phase(percent=100)]) == [1, 1]


def test_every_phase_gets_a_device_when_possible() -> None:
    phases = [Phase(percent=1), Phase(percent=2), Phase(percent=100)]
    assert _sizes(10, phases) == [1, 1, 8]
    # Fewer devices than phases: earlier phases first, nothing lost.
    assert _sizes(2, [Phase(percent=10), Phase(percent=50), Phase(percent=100)]) == [1, 1, 0]
    assert _sizes(0, [Phase(percent=10), Phase(percent=100)]) == [0, 0]


def test_assignment_is_deterministic_and_follows_the_hash_order() -> None:
    devices = [f"device-{i}" for i in range(20)]
    phases = [Phase(percent=10), Phase(percent=50), Phase(percent=100)]
    first = assign_phases("dep-1", devices, phases)
    assert first == assign_phases("dep-1", list(reversed(devices)), phases)
    assert [d for d, _ in first] == rollout_order("dep-1", devices)
    assert [p for _, p in first] == [0] * 2 + [1] * 8 + [2] * 10
    # Another deployment picks other canaries.
    assert rollout_order("dep-2", devices) != rollout_order("dep-1", devices)


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        ([], "at least one phase"),
        ([Phase(percent=50)], "whole target"),
        ([Phase(percent=50), Phase(percent=40), Phase(percent=100)], "must grow"),
        ([Phase(percent=10, count=3), Phase(percent=100)], "exactly one"),
        ([Phase(), Phase(percent=100)], "exactly one"),
        ([Phase(percent=0), Phase(percent=100)], "1..100"),
        ([Phase(count=0), Phase(percent=100)], "at least 1"),
        ([Phase(percent=100, soak_seconds=-1)], "negative"),
        ([Phase(percent=100, max_failure_percent=101)], "0..100"),
        ([Phase(count=5), Phase(count=5), Phase(percent=100)], "must grow"),
    ],
)
def test_invalid_plans(phases: list[Phase], message: str) -> None:
    with pytest.raises(RequestInvalidError, match=message):
        validate_phases(phases)


def test_valid_plan() -> None:
    validate_phases([Phase(count=1, soak_seconds=60), Phase(percent=50), Phase(percent=100)])
