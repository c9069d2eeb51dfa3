"""The Fleetcast delta file: a small header, then one patch per segment of the new image.

Layout::

    b"fleetcast-delta 2\\n"          marker (format version: 1 or 2)
    u32 big-endian                   length of the header (at most MAX_HEADER_SIZE)
    header                           canonical JSON, see :class:`DeltaHeader`
    patch 0 | patch 1 | ...          one engine patch per segment, in order

The new image is cut into segments of at most ``segment_size`` bytes. Each
segment is reconstructed from its patch and a *window*: up to a few ranges
of the old image (``old``), then, in format 2, up to a few ranges of the new
image that earlier segments already wrote (``written``; the device reads
them back from the slot it is writing), concatenated, of at most
``window_size`` bytes in all. A device therefore never needs more than one
window, one segment and one patch in memory, whatever the image size, and
the whole file is applied front to back while it downloads.

Format 1 has only ``old`` ranges. A delta is written as format 1 unless a
segment names ``written`` ranges, so agents that only know format 1 can
still apply every delta that does not need format 2 (and refuse the others
by their marker, then install the full artifact).

Nothing in a delta is trusted. The header is parsed with every length
bounded (by :class:`DeltaLimits` and by the sizes the caller expects from
the signed manifest); a segment's sha256 only makes a bad patch fail early.
What decides is the sha256 of the whole result, compared with the signed
manifest by :func:`fleetcast.delta.apply_delta`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from fleetcast.core.canonical import canonical_json, parse_json_object
from fleetcast.exceptions import DeltaError, ValidationError

_MARKER_PREFIX: Final = b"fleetcast-delta "
#: The marker of each format version this code reads and writes.
MARKERS: Final = {1: b"fleetcast-delta 1\n", 2: b"fleetcast-delta 2\n"}
MARKER: Final = MARKERS[1]
MAX_HEADER_SIZE: Final = 4 * 1024 * 1024
ENGINES: Final = ("hdiffpatch", "zstd")
_LENGTH = struct.Struct(">I")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAX_RANGES: Final = 8


@dataclass(frozen=True)
class DeltaLimits:
    """What a device accepts; every number bounds memory or work.

    Attributes:
        max_segment_size: largest segment of the new image held in memory.
        max_window_size: largest window of the old image held in memory.
        engines: the engines this device can apply.
    """

    max_segment_size: int = 8 * 1024 * 1024
    max_window_size: int = 16 * 1024 * 1024
    engines: tuple[str, ...] = ENGINES


@dataclass(frozen=True)
class ImageRef:
    """An image by length and sha256 (the old or the new one)."""

    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Segment:
    """How to rebuild ``new_length`` bytes at ``new_offset`` of the new image.

    ``old_ranges`` are ``(offset, length)`` pairs of the old image,
    ``written_ranges`` pairs of the new image before ``new_offset`` (already
    rebuilt by earlier segments; format 2 only). The old ranges, then the
    written ones, concatenated, are the window the patch refers to.
    """

    new_offset: int
    new_length: int
    old_ranges: tuple[tuple[int, int], ...]
    patch_size: int
    sha256: str
    written_ranges: tuple[tuple[int, int], ...] = ()

    @property
    def window_size(self) -> int:
        return sum(length for _, length in (*self.old_ranges, *self.written_ranges))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "new": [self.new_offset, self.new_length],
            "old": [[o, n] for o, n in self.old_ranges],
            "patch": self.patch_size,
            "sha256": self.sha256,
        }
        if self.written_ranges:
            data["written"] = [[o, n] for o, n in self.written_ranges]
        return data


@dataclass(frozen=True)
class DeltaHeader:
    """What a delta rebuilds (``target``) from what (``source``), and how."""

    engine: str
    source: ImageRef
    target: ImageRef
    segment_size: int
    window_size: int
    segments: tuple[Segment, ...]

    @property
    def patches_size(self) -> int:
        return sum(s.patch_size for s in self.segments)

    @property
    def version(self) -> int:
        """The oldest format that can express this delta (2: it reads back the new image)."""
        return 2 if any(s.written_ranges for s in self.segments) else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "source": self.source.to_dict(),
            "target": self.target.to_dict(),
            "segment_size": self.segment_size,
            "window_size": self.window_size,
            "segments": [s.to_dict() for s in self.segments],
        }

    def encode(self) -> bytes:
        """The marker, the length and the header: everything before the first patch."""
        body = canonical_json(self.to_dict())
        if len(body) > MAX_HEADER_SIZE:
            raise DeltaError(f"delta header of {len(body)} bytes exceeds {MAX_HEADER_SIZE}")
        return MARKERS[self.version] + _LENGTH.pack(len(body)) + body

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], limits: DeltaLimits, *, version: int = 2
    ) -> DeltaHeader:
        """Parse and bound-check a header of format ``version``.

        Raises:
            DeltaError: a field is missing, inconsistent or over a limit.
        """
        try:
            header = cls._from_dict(data, limits)
        except (KeyError, TypeError, ValueError) as e:
            raise DeltaError(f"malformed delta header: {e!r}") from e
        if header.version > version:
            raise DeltaError(f"a format {version} delta cannot read back the new image")
        return header

    @classmethod
    def _from_dict(cls, data: dict[str, Any], limits: DeltaLimits) -> DeltaHeader:
        engine = data["engine"]
        if engine not in limits.engines:
            raise DeltaError(f"delta engine {engine!r} is not supported here")
        source, target = _image(data["source"], "source"), _image(data["target"], "target")
        segment_size, window_size = _count(data["segment_size"]), _count(data["window_size"])
        if not 0 < segment_size <= limits.max_segment_size:
            raise DeltaError(
                f"delta segments of {segment_size} bytes; this device allows "
                f"{limits.max_segment_size}"
            )
        if window_size > limits.max_window_size:
            raise DeltaError(
                f"delta windows of {window_size} bytes; this device allows {limits.max_window_size}"
            )
        raw_segments = data["segments"]
        if not isinstance(raw_segments, list):
            raise DeltaError("delta header: 'segments' must be a list")
        segments: list[Segment] = []
        expected_offset = 0
        for index, raw in enumerate(raw_segments):
            seg = _segment(raw, index)
            if seg.new_offset != expected_offset or not 0 < seg.new_length <= segment_size:
                raise DeltaError(f"delta segment {index} does not continue the image")
            if seg.patch_size > max_patch_size(seg.new_length):
                raise DeltaError(f"delta segment {index}: patch larger than any valid one")
            if seg.window_size > window_size:
                raise DeltaError(f"delta segment {index} exceeds the declared window size")
            for offset, length in seg.old_ranges:
                if offset + length > source.size:
                    raise DeltaError(f"delta segment {index} reads past the end of the source")
            # Only bytes that earlier segments wrote (and checked) can be read back.
            for offset, length in seg.written_ranges:
                if offset + length > seg.new_offset:
                    raise DeltaError(
                        f"delta segment {index} reads new-image bytes that are not written yet"
                    )
            expected_offset += seg.new_length
            segments.append(seg)
        if expected_offset != target.size:
            raise DeltaError(
                f"delta segments cover {expected_offset} bytes, the target has {target.size}"
            )
        return cls(engine, source, target, segment_size, window_size, tuple(segments))


def max_patch_size(segment_size: int) -> int:
    """The largest patch accepted for a segment: incompressible data plus framing."""
    return segment_size + segment_size // 64 + 64 * 1024


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return value


def _sha(value: object) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise ValueError(f"{value!r} is not a sha256")
    return value


def _image(value: object, what: str) -> ImageRef:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object")
    return ImageRef(_count(value["size"]), _sha(value["sha256"]))


def _segment(raw: object, index: int) -> Segment:
    if not isinstance(raw, dict):
        raise ValueError(f"segment {index} must be an object")
    new = raw["new"]
    if not isinstance(new, list) or len(new) != 2:
        raise ValueError(f"segment {index}: 'new' must be [offset, length]")
    old = _ranges(raw["old"], index, "old")
    written = _ranges(raw.get("written", []), index, "written")
    if len(old) + len(written) > _MAX_RANGES:
        raise ValueError(f"segment {index}: a window has at most {_MAX_RANGES} ranges")
    return Segment(
        new_offset=_count(new[0]),
        new_length=_count(new[1]),
        old_ranges=old,
        patch_size=_count(raw["patch"]),
        sha256=_sha(raw["sha256"]),
        written_ranges=written,
    )


def _ranges(raw: object, index: int, what: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(raw, list) or len(raw) > _MAX_RANGES:
        raise ValueError(f"segment {index}: {what!r} must list at most {_MAX_RANGES} ranges")
    ranges: list[tuple[int, int]] = []
    for pair in raw:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(f"segment {index}: a {what} range must be [offset, length]")
        ranges.append((_count(pair[0]), _count(pair[1])))
    return tuple(ranges)


def parse_header(read: Callable[[int], bytes], limits: DeltaLimits) -> tuple[DeltaHeader, int]:
    """Read the marker and header from ``read(n)``; return it and the bytes consumed.

    Raises:
        DeltaError: not a delta, truncated, or the header is invalid or over a limit.
    """
    prefix = read_exactly(read, len(MARKER) + _LENGTH.size, "delta marker")
    marker = prefix[: len(MARKER)]
    version = next((v for v, m in MARKERS.items() if m == marker), None)
    if version is None:
        if marker.startswith(_MARKER_PREFIX):
            raise DeltaError(f"delta format {marker[len(_MARKER_PREFIX) :]!r} is not supported")
        raise DeltaError("not a Fleetcast delta (bad marker)")
    (length,) = _LENGTH.unpack(prefix[len(MARKER) :])
    if length > MAX_HEADER_SIZE:
        raise DeltaError(f"delta header of {length} bytes exceeds {MAX_HEADER_SIZE}")
    body = read_exactly(read, length, "delta header")
    try:
        data = parse_json_object(body, what="delta header")
    except ValidationError as e:
        raise DeltaError(str(e)) from e
    return DeltaHeader.from_dict(data, limits, version=version), len(prefix) + length


def read_exactly(read: Callable[[int], bytes], n: int, what: str) -> bytes:
    """Read exactly ``n`` bytes.

    Raises:
        DeltaError: the stream ends first.
    """
    parts: list[bytes] = []
    remaining = n
    while remaining:
        data = read(remaining)
        if not data:
            raise DeltaError(f"delta is truncated in the {what}")
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)


__all__ = [
    "ENGINES",
    "MARKER",
    "MARKERS",
    "MAX_HEADER_SIZE",
    "DeltaHeader",
    "DeltaLimits",
    "ImageRef",
    "Segment",
    "max_patch_size",
    "parse_header",
    "read_exactly",
]
