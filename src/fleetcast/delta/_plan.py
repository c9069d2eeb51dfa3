"""Which part of the old image each segment of the new image is matched against.

A segment can only refer to its window (bounded memory on the device), so
the window must hold the old bytes the segment resembles. When the whole old
image fits in one window, that is the window of every segment. Otherwise the
planner looks for *displacements*: blocks of the new segment found in the
old image at another offset (a file system image keeps most blocks in place,
a tar shifts everything behind a changed member by the size difference, a
file moved to other blocks is a second displacement).

Method: the old image is indexed by the first ``_KEY`` bytes at every
``_OLD_STRIDE`` boundary; the new segment is probed at every ``_NEW_STRIDE``
boundary (tar members are 512-byte aligned, file system blocks at least
1 KiB, so an aligned probe meets an aligned old block whatever the shift).
The displacements seen most often get a range of the old image each, the
most frequent one first and widest; a segment with no hit gets the old
bytes at its own offset. Uniform blocks (zeros, erased flash) are skipped,
they match everywhere and say nothing.
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
_SIDE_MARGIN: Final = 256 * 1024


class Buffer(Protocol):
    """Bytes-like and sliceable: ``bytes``, ``mmap.mmap``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice, /) -> bytes: ...


@dataclass(frozen=True)
class SegmentPlan:
    """One segment of the new image and the old ranges its window is made of."""

    new_offset: int
    new_length: int
    old_ranges: tuple[tuple[int, int], ...]


def _uniform(block: bytes) -> bool:
    return block.count(block[:1]) == len(block)


def _index(old: Buffer) -> dict[bytes, int]:
    index: dict[bytes, int] = {}
    for offset in range(0, len(old) - _KEY + 1, _OLD_STRIDE):
        key = old[offset : offset + _KEY]
        if not _uniform(key):
            index.setdefault(key, offset)
    return index


def _displacements(new: Buffer, start: int, end: int, index: dict[bytes, int]) -> list[int]:
    counts: Counter[int] = Counter()
    for position in range(start, end - _KEY + 1, _NEW_STRIDE):
        found = index.get(new[position : position + _KEY])
        if found is not None:
            counts[found - position] += 1
    if not counts:
        return []
    floor = max(2, counts.most_common(1)[0][1] // 50)
    return [d for d, n in counts.most_common(_MAX_DISPLACEMENTS) if n >= floor]


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


def _window(
    start: int, end: int, displacements: list[int], old_size: int, budget: int
) -> tuple[tuple[int, int], ...]:
    length = end - start
    primary, *others = displacements or [0]
    # Side ranges for the other displacements: the segment's span plus a margin.
    side: list[tuple[int, int]] = []
    used = 0
    for d in others:
        lo, hi = _clip(start + d - _SIDE_MARGIN, end + d + _SIDE_MARGIN, old_size)
        if used + (hi - lo) + length > budget:
            break
        side.append((lo, hi))
        used += hi - lo
    # The primary displacement gets the rest of the budget, centred on the segment.
    room = max(0, budget - used - length)
    lo, hi = _clip(start + primary - room // 2, end + primary + (room - room // 2), old_size)
    ranges = _merge([(lo, hi), *side])
    # Merging may leave the window over budget only if ranges overlapped less
    # than their sum; trim from the end to be exact.
    out: list[tuple[int, int]] = []
    total = 0
    for rlo, rhi in ranges:
        take = min(rhi - rlo, budget - total)
        if take > 0:
            out.append((rlo, take))
            total += take
    return tuple(out)


def plan_segments(
    old: Buffer, new: Buffer, *, segment_size: int, window_size: int
) -> list[SegmentPlan]:
    """Cut ``new`` into segments and choose each one's window of ``old``.

    Args:
        old: the old image.
        new: the new image.
        segment_size: the largest segment (bytes of the new image).
        window_size: the largest window (bytes of the old image per segment).
    """
    old_size, new_size = len(old), len(new)
    whole = old_size <= window_size
    index = {} if whole else _index(old)
    plans: list[SegmentPlan] = []
    for start in range(0, new_size, segment_size):
        end = min(new_size, start + segment_size)
        if whole:
            ranges: tuple[tuple[int, int], ...] = ((0, old_size),) if old_size else ()
        else:
            ranges = _window(
                start, end, _displacements(new, start, end, index), old_size, window_size
            )
        plans.append(SegmentPlan(start, end - start, ranges))
    return plans


__all__ = ["SegmentPlan", "plan_segments"]
