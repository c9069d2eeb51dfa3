"""Which bytes each segment of the new image is matched against: its window.

A segment can only refer to its window (bounded memory on the device), so
the window must hold the bytes the segment resembles: ranges of the old
image and, where the new image repeats itself, ranges of the new image that
earlier segments already wrote (the device reads them back). When the whole
old image fits in one window, that is the window of every segment.
Otherwise the planner looks for *displacements*: blocks of the new segment
found elsewhere (a file system image keeps most blocks in place, a tar
shifts everything behind a changed member by the size difference, a file
moved to other blocks is a second displacement, the second copy of a new
file is found in the new image, behind the segment).

Method: the old and the new image are indexed by the first ``_KEY`` bytes
at every ``_OLD_STRIDE`` boundary; the new segment is probed at every
``_NEW_STRIDE`` boundary (tar members are 512-byte aligned, file system
blocks at least 1 KiB, so an aligned probe meets an aligned block whatever
the shift). Displacements are picked greedily by the probes they find that
earlier picks do not; the first gets a range centred on the segment, as
wide as the budget allows, the others the span of their probes plus a
margin. A segment with no hit gets the old bytes at its own offset. Uniform
blocks (zeros, erased flash) are skipped, they match everywhere and say
nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

_KEY: Final = 32
_OLD_STRIDE: Final = 4096
_NEW_STRIDE: Final = 512
_MAX_DISPLACEMENTS: Final = 4
#: A side range reaches this fraction of the window beyond the probes it
#: found (256 KiB for a 16 MiB window): unprobed neighbouring bytes.
_SIDE_MARGIN_SHARE: Final = 64


class Buffer(Protocol):
    """Bytes-like and sliceable: ``bytes``, ``mmap.mmap``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice, /) -> bytes: ...


@dataclass(frozen=True)
class SegmentPlan:
    """One segment of the new image and the ranges its window is made of.

    ``old_ranges`` are ranges of the old image, ``written_ranges`` of the new
    image before ``new_offset``.
    """

    new_offset: int
    new_length: int
    old_ranges: tuple[tuple[int, int], ...]
    written_ranges: tuple[tuple[int, int], ...] = ()


def _uniform(block: bytes) -> bool:
    return block.count(block[:1]) == len(block)


def _index(old: Buffer) -> dict[bytes, int]:
    index: dict[bytes, int] = {}
    for offset in range(0, len(old) - _KEY + 1, _OLD_STRIDE):
        key = old[offset : offset + _KEY]
        if not _uniform(key):
            index.setdefault(key, offset)
    return index


#: Where a window range comes from: the old image, or the part of the new
#: image already written by earlier segments.
_OLD: Final = "old"
_WRITTEN: Final = "written"


@dataclass(frozen=True)
class _Candidate:
    """A displacement (source offset - new offset) in ``kind``, and the span
    ``[first, last]`` of the segment's probes it finds."""

    kind: str
    displacement: int
    first: int
    last: int


def _candidates(
    new: Buffer,
    start: int,
    end: int,
    old_index: dict[bytes, int],
    new_index: dict[bytes, int],
) -> list[_Candidate]:
    """The displacements worth a range, best first, chosen greedily by coverage.

    Each probe of the segment may be found in the old image and, before the
    segment, in the new one. The first pick is the displacement that finds
    the most probes; each next one the displacement that finds the most
    probes the earlier picks do not (a repeated *new* file is found only in
    the written part; its unchanged neighbours are found in both, and need
    not be paid twice). Ties go to the old image.
    """
    probes: list[tuple[int, int | None, int | None]] = []
    for position in range(start, end - _KEY + 1, _NEW_STRIDE):
        key = new[position : position + _KEY]
        found_old = old_index.get(key)
        found_new = new_index.get(key)
        if found_new is not None and found_new + _KEY > start:
            found_new = None  # not written yet when this segment is rebuilt
        if found_old is None and found_new is None:
            continue
        probes.append(
            (
                position,
                None if found_old is None else found_old - position,
                None if found_new is None else found_new - position,
            )
        )
    picked: list[_Candidate] = []
    floor = 0
    while probes and len(picked) < _MAX_DISPLACEMENTS:
        counts: Counter[tuple[str, int]] = Counter()
        for _, d_old, d_new in probes:
            if d_old is not None:
                counts[(_OLD, d_old)] += 1
            if d_new is not None:
                counts[(_WRITTEN, d_new)] += 1
        # Highest count first; on equal counts the old image (sorts before "written").
        (kind, d), n = min(counts.items(), key=lambda item: (-item[1], item[0][0]))
        if not floor:
            floor = max(2, n // 50)
        if n < floor:
            break
        column = 1 if kind == _OLD else 2
        found = [p[0] for p in probes if p[column] == d]
        picked.append(_Candidate(kind, d, found[0], found[-1]))
        probes = [p for p in probes if p[column] != d]
    return picked


def _clip(start: int, end: int, size: int) -> tuple[int, int]:
    """``[start, end)`` moved (not cut) into ``[0, size)`` where possible."""
    if start < 0:
        end, start = end - start, 0
    if end > size:
        start, end = max(0, start - (end - size)), size
    return start, end


def _merge(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort and merge overlapping ``[start, end)`` ranges."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _trim(ranges: Sequence[tuple[int, int]], budget: int) -> tuple[tuple[int, int], ...]:
    """``[start, end)`` ranges as ``(offset, length)``, cut to ``budget`` bytes in all."""
    out: list[tuple[int, int]] = []
    total = 0
    for lo, hi in ranges:
        take = min(hi - lo, budget - total)
        if take > 0:
            out.append((lo, take))
            total += take
    return tuple(out)


def _window(
    start: int, end: int, candidates: list[_Candidate], old_size: int, budget: int
) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    """The old and the written ranges of one segment's window, ``budget`` bytes at most."""
    length = end - start
    # The written part of the new image is everything before this segment.
    limit = {_OLD: old_size, _WRITTEN: start}
    primary, *others = candidates or [_Candidate(_OLD, 0, start, end)]
    # Side ranges for the other displacements: only the span of the probes
    # each one found, plus a margin (content of a segment often comes from
    # two or three places, each a part of it).
    ranges: dict[str, list[tuple[int, int]]] = {_OLD: [], _WRITTEN: []}
    used = 0
    margin = budget // _SIDE_MARGIN_SHARE
    for c in others:
        lo, hi = _clip(
            c.first + c.displacement - margin,
            c.last + _KEY + c.displacement + margin,
            limit[c.kind],
        )
        if used + (hi - lo) + length > budget:
            continue
        ranges[c.kind].append((lo, hi))
        used += hi - lo
    # The primary displacement gets the rest of the budget, centred on the segment.
    room = max(0, budget - used - length)
    d = primary.displacement
    ranges[primary.kind].append(
        _clip(start + d - room // 2, end + d + (room - room // 2), limit[primary.kind])
    )
    # Within the budget by construction; trimmed anyway, so that no planning
    # mistake can produce a window a device refuses (old ranges come first).
    old = _trim(_merge(ranges[_OLD]), budget)
    written = _trim(_merge(ranges[_WRITTEN]), budget - sum(n for _, n in old))
    return old, written


def plan_segments(
    old: Buffer, new: Buffer, *, segment_size: int, window_size: int, reuse_written: bool = True
) -> list[SegmentPlan]:
    """Cut ``new`` into segments and choose each one's window.

    Args:
        old: the old image.
        new: the new image.
        segment_size: the largest segment (bytes of the new image).
        window_size: the largest window (bytes per segment).
        reuse_written: windows may also name ranges of the new image that
            earlier segments wrote (format 2), where content repeats.
    """
    old_size, new_size = len(old), len(new)
    whole = old_size <= window_size
    old_index = {} if whole else _index(old)
    new_index = _index(new) if reuse_written and not whole else {}
    plans: list[SegmentPlan] = []
    for start in range(0, new_size, segment_size):
        end = min(new_size, start + segment_size)
        if whole:
            ranges: tuple[tuple[int, int], ...] = ((0, old_size),) if old_size else ()
            plans.append(SegmentPlan(start, end - start, ranges))
            continue
        candidates = _candidates(new, start, end, old_index, new_index)
        old_ranges, written = _window(start, end, candidates, old_size, window_size)
        plans.append(SegmentPlan(start, end - start, old_ranges, written))
    return plans


__all__ = ["SegmentPlan", "plan_segments"]
