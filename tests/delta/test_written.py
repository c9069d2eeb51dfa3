"""Format 2: windows that also name ranges of the new image already written.

An image that holds the same new file several times (the same tree in
several places) pays for the change once: later copies are rebuilt from the
first one, read back from the slot being written. What is read back is
bounded exactly like the old image's windows, only bytes earlier segments
wrote (and checked) can be named, and a header that says otherwise is
refused before anything is applied.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from fleetcast.delta import (
    DeltaHeader,
    DeltaLimits,
    DeltaParams,
    ImageRef,
    apply_delta,
    generate_delta,
    parse_header,
)
from fleetcast.delta._format import MARKERS
from fleetcast.delta._plan import plan_segments
from fleetcast.exceptions import DeltaError
from tests.delta.conftest import Pair, make_pair, repeated_update

SEGMENT, WINDOW = 64 * 1024, 160 * 1024
LIMITS = DeltaLimits(max_segment_size=SEGMENT, max_window_size=WINDOW)


@pytest.fixture
def repeated(tmp_path: Path) -> Pair:
    old, new = repeated_update()
    return make_pair(tmp_path / "repeated", old, new)


def _ref(path: Path) -> ImageRef:
    data = path.read_bytes()
    return ImageRef(len(data), hashlib.sha256(data).hexdigest())


def _generate(pair: Pair, tmp_path: Path, engine: str = "zstd", **params: bool) -> bytes:
    out = tmp_path / f"{engine}-{sorted(params.items())}.delta"
    generate_delta(
        pair.old,
        pair.new,
        out,
        DeltaParams(engine, segment_size=SEGMENT, window_size=WINDOW, **params),
    )
    return out.read_bytes()


def _apply_to_file(
    pair: Pair,
    delta: bytes,
    out: Path,
    *,
    limits: DeltaLimits = LIMITS,
    written_path: Path | None = None,
) -> bytes:
    """Apply as a device does: unbuffered writes to a file, read back from it."""
    with out.open("wb", buffering=0) as sink:
        apply_delta(
            io.BytesIO(delta).read,
            pair.old,
            sink.write,
            source=_ref(pair.old),
            target=_ref(pair.new),
            limits=limits,
            max_size=len(delta),
            written_path=out if written_path is None else written_path,
        )
    return out.read_bytes()


def _with_header(delta: bytes, header: DeltaHeader, *, version: int | None = None) -> bytes:
    """``delta`` with another header (and, if given, another format marker)."""
    _, start = parse_header(io.BytesIO(delta).read, LIMITS)
    encoded = header.encode()
    if version is not None:
        encoded = MARKERS[version] + encoded[len(MARKERS[version]) :]
    return encoded + delta[start:]


@pytest.mark.parametrize("engine", ["hdiffpatch", "zstd"])
def test_repeated_new_content_is_rebuilt_from_its_first_copy(
    repeated: Pair, tmp_path: Path, engine: str
) -> None:
    """Copies 2-4 of the changed file are beyond every old window's reach of a
    changed copy; their segments name the first new copy instead, so the change is
    paid for about once, not four times."""
    delta = _generate(repeated, tmp_path, engine)
    header, _ = parse_header(io.BytesIO(delta).read, LIMITS)
    assert header.version == 2 and delta.startswith(MARKERS[2])
    spacing = 256 * 1024
    for copy in (1, 2, 3):
        segment = next(s for s in header.segments if s.new_offset == copy * spacing)
        # The window holds the first copy of the new file, read back.
        assert any(o <= 0 and o + n >= 48 * 1024 for o, n in segment.written_ranges)
    assert _apply_to_file(repeated, delta, tmp_path / "rebuilt") == repeated.new_bytes

    without = _generate(repeated, tmp_path, engine, reuse_written=False)
    assert parse_header(io.BytesIO(without).read, LIMITS)[0].version == 1
    assert len(delta) < len(without) * 0.5


def test_without_repeats_the_delta_stays_format_1(pair: Pair, tmp_path: Path) -> None:
    """Agents that know only format 1 keep applying every delta that needs no more."""
    delta = _generate(pair, tmp_path)
    assert delta.startswith(MARKERS[1])
    assert all(
        not s.written_ranges for s in parse_header(io.BytesIO(delta).read, LIMITS)[0].segments
    )


def test_a_format_2_delta_needs_a_place_to_read_back(repeated: Pair, tmp_path: Path) -> None:
    delta = _generate(repeated, tmp_path)
    with pytest.raises(DeltaError, match="cannot be read back"):
        apply_delta(
            io.BytesIO(delta).read,
            repeated.old,
            io.BytesIO().write,
            source=_ref(repeated.old),
            target=_ref(repeated.new),
            limits=LIMITS,
            max_size=len(delta),
        )


def test_references_to_bytes_not_yet_written_are_refused(repeated: Pair, tmp_path: Path) -> None:
    delta = _generate(repeated, tmp_path)
    header, _ = parse_header(io.BytesIO(delta).read, LIMITS)
    index, segment = next((i, s) for i, s in enumerate(header.segments) if s.written_ranges)
    # Up to one byte into the segment itself: it is being rebuilt, not written yet.
    (_, length), *rest = segment.written_ranges
    reaching = replace(segment, written_ranges=((segment.new_offset - length + 1, length), *rest))
    # Far ahead in the image: not written at all yet.
    ahead = replace(segment, written_ranges=((header.target.size - 10, 10),))
    for bad in (reaching, ahead):
        segments = list(header.segments)
        segments[index] = bad
        lying = _with_header(delta, replace(header, segments=tuple(segments)))
        with pytest.raises(DeltaError, match="not written yet"):
            _apply_to_file(repeated, lying, tmp_path / "rebuilt")


def test_written_ranges_need_format_2_and_unknown_formats_are_refused(
    repeated: Pair, tmp_path: Path
) -> None:
    delta = _generate(repeated, tmp_path)
    header, _ = parse_header(io.BytesIO(delta).read, LIMITS)
    with pytest.raises(DeltaError, match="format 1 delta cannot read back"):
        parse_header(io.BytesIO(_with_header(delta, header, version=1)).read, LIMITS)
    future = b"fleetcast-delta 3\n" + delta[len(MARKERS[2]) :]
    with pytest.raises(DeltaError, match="format b'3\\\\n' is not supported"):
        parse_header(io.BytesIO(future).read, LIMITS)


def test_a_reference_to_other_written_bytes_fails_its_segment(
    repeated: Pair, tmp_path: Path
) -> None:
    """The header points a window at other (valid, written) bytes: the segment
    rebuilds something else and is refused by its sha256 before it is used."""
    delta = _generate(repeated, tmp_path)
    header, _ = parse_header(io.BytesIO(delta).read, LIMITS)
    index, segment = next((i, s) for i, s in enumerate(header.segments) if s.written_ranges)
    (offset, length), *rest = segment.written_ranges
    moved = (max(0, offset - 4096), length) if offset else (offset + 4096, length - 4096)
    segments = list(header.segments)
    segments[index] = replace(segment, written_ranges=(moved, *rest))
    lying = _with_header(delta, replace(header, segments=tuple(segments)))
    with pytest.raises(DeltaError):
        _apply_to_file(repeated, lying, tmp_path / "rebuilt")


def test_a_slot_that_reads_back_other_bytes_is_caught(repeated: Pair, tmp_path: Path) -> None:
    """What is read back is checked too: a slot returning other bytes (bad flash)
    or fewer bytes fails the apply, and the device installs the full artifact."""
    delta = _generate(repeated, tmp_path)
    wrong = tmp_path / "wrong"
    wrong.write_bytes(bytes(len(repeated.new_bytes)))
    with pytest.raises(DeltaError, match="other bytes"):
        _apply_to_file(repeated, delta, tmp_path / "rebuilt", written_path=wrong)
    wrong.write_bytes(b"")
    with pytest.raises(DeltaError, match="ends before"):
        _apply_to_file(repeated, delta, tmp_path / "rebuilt", written_path=wrong)


def test_written_ranges_count_against_the_window_limits(repeated: Pair, tmp_path: Path) -> None:
    """Old and written ranges together are one window: the header's declared
    window must hold both, and the device's limit bounds the declared window."""
    delta = _generate(repeated, tmp_path)
    header, _ = parse_header(io.BytesIO(delta).read, LIMITS)
    index, segment = next((i, s) for i, s in enumerate(header.segments) if s.written_ranges)
    assert segment.old_ranges  # the neighbours of the file come from the old image
    old_bytes = sum(n for _, n in segment.old_ranges)
    # Within the declared window counting only the old ranges, over it with both.
    small = replace(header, window_size=old_bytes)
    with pytest.raises(DeltaError, match="exceeds the declared window size"):
        parse_header(io.BytesIO(_with_header(delta, small)).read, LIMITS)
    with pytest.raises(DeltaError, match="windows of"):
        parse_header(
            io.BytesIO(delta).read, replace(LIMITS, max_window_size=header.window_size - 1)
        )
    too_many = replace(segment, written_ranges=tuple((i, 1) for i in range(8)))
    segments = list(header.segments)
    segments[index] = too_many
    body = json.dumps(replace(header, segments=tuple(segments)).to_dict()).encode()
    with pytest.raises(DeltaError, match="at most 8 ranges"):
        parse_header(io.BytesIO(MARKERS[2] + len(body).to_bytes(4, "big") + body).read, LIMITS)


@pytest.mark.parametrize("engine", ["hdiffpatch", "zstd"])
def test_apply_memory_is_bounded_by_the_segment_and_window_limits(
    repeated: Pair, tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per segment the decoder gets one window (old and read-back ranges together)
    and one patch: each within the device's limits, whatever the image size."""
    delta = _generate(repeated, tmp_path, engine)
    from fleetcast.delta import _apply

    seen: list[tuple[int, int, int]] = []
    real_decode = _apply.decode

    def recording(engine: str, window: bytes, patch: bytes, new_length: int) -> bytes:
        seen.append((len(window), len(patch), new_length))
        return real_decode(engine, window, patch, new_length)

    monkeypatch.setattr(_apply, "decode", recording)
    assert _apply_to_file(repeated, delta, tmp_path / "rebuilt") == repeated.new_bytes
    assert len(seen) == len(repeated.new_bytes) // SEGMENT
    assert max(w for w, _, _ in seen) <= WINDOW
    assert max(n for _, _, n in seen) <= SEGMENT
    assert max(p for _, p, _ in seen) < SEGMENT


def test_planned_windows_stay_in_budget_and_behind_the_segment() -> None:
    """Whatever the planner finds, a window is at most ``window_size`` bytes, at
    most 8 ranges, and reads back only what earlier segments wrote."""
    old, new = repeated_update(copies=6, spacing=96 * 1024)
    for segment_size, window_size in ((32 * 1024, 48 * 1024), (64 * 1024, 160 * 1024)):
        plans = plan_segments(old, new, segment_size=segment_size, window_size=window_size)
        assert any(p.written_ranges for p in plans)
        for plan in plans:
            ranges = (*plan.old_ranges, *plan.written_ranges)
            assert sum(n for _, n in ranges) <= window_size and len(ranges) <= 8
            assert all(o + n <= len(old) for o, n in plan.old_ranges)
            assert all(o + n <= plan.new_offset for o, n in plan.written_ranges)
        none = plan_segments(
            old, new, segment_size=segment_size, window_size=window_size, reuse_written=False
        )
        assert not any(p.written_ranges for p in none)
