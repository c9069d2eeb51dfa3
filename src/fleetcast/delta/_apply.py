"""Applying a delta: old image + delta stream -> new image, in bounded memory.

The caller passes the delta as a ``read(n)`` function (an HTTP body, a file),
the old image as a path (the device's active slot; only the ranges each
segment names are read, with ``pread``) and a ``write`` function for the new
image (the inactive slot). A format 2 delta also reads back ranges of the
new image that earlier segments wrote, from ``written_path`` (the inactive
slot again), with ``pread``: ``write`` must have handed the bytes to the
operating system when it returns (no user-space buffer). Per segment, memory
holds one patch, one window (old and written ranges together) and one
rebuilt segment, all bounded by :class:`DeltaLimits`; the delta as a whole
is bounded by ``max_size``.

The delta is checked before use: its header must name exactly the expected
source (the installed image's size and sha256) and target (the signed
manifest's size and sha256). Each segment's sha256 makes a bad patch fail
early; the sha256 of the whole result, compared with the signed manifest,
decides. Any failure is a :class:`~fleetcast.exceptions.DeltaError`: the
caller discards what it wrote and installs the full artifact.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from fleetcast.delta._engines import decode
from fleetcast.delta._format import (
    DeltaHeader,
    DeltaLimits,
    ImageRef,
    Segment,
    parse_header,
    read_exactly,
)
from fleetcast.exceptions import DeltaError


def _window(source_fd: int, written_fd: int | None, segment: Segment, index: int) -> bytes:
    parts = []
    for fd, ranges, what in (
        (source_fd, segment.old_ranges, "the source"),
        (written_fd, segment.written_ranges, "the new image read back"),
    ):
        for offset, length in ranges:
            if fd is None:
                raise DeltaError(f"delta segment {index} reads back the new image; it cannot be")
            data = os.pread(fd, length, offset)
            if len(data) != length:
                raise DeltaError(f"{what} ends before {offset + length} bytes")
            parts.append(data)
    # One range (the common case) is used as read: no second copy.
    return parts[0] if len(parts) == 1 else b"".join(parts)


def apply_delta(
    read: Callable[[int], bytes],
    source_path: Path,
    write: Callable[[bytes], object],
    *,
    source: ImageRef,
    target: ImageRef,
    limits: DeltaLimits,
    max_size: int,
    written_path: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> DeltaHeader:
    """Rebuild the image ``target`` from ``source_path`` and the delta read by ``read``.

    Args:
        read: returns up to ``n`` bytes of the delta, ``b""`` at its end.
        source_path: the old image (only its first ``source.size`` bytes count).
        write: receives the new image, front to back.
        source: the image the delta must have been made from.
        target: the image it must rebuild (from the signed manifest).
        limits: the segment, window and engine limits of this device.
        max_size: the largest delta accepted, in bytes.
        written_path: where ``write`` puts the new image, to read back the
            ranges a format 2 delta names (None: such a delta is refused).
        progress: called with the bytes of the new image written so far.

    Returns:
        The delta's header.

    Raises:
        DeltaError: malformed, over a limit, for another source or target, a
            corrupt patch, a range that cannot be read back, or a result
            that differs from ``target``.
        OSError: reading the source or writing failed (a device problem).
    """
    header, consumed = parse_header(read, limits)
    if header.source != source:
        raise DeltaError(
            f"delta was made from a {header.source.size}-byte image {header.source.sha256[:12]}, "
            f"this device has {source.size} bytes {source.sha256[:12]}"
        )
    if header.target != target:
        raise DeltaError("delta does not rebuild the image of the signed manifest")
    if consumed + header.patches_size > max_size:
        raise DeltaError(f"delta of {consumed + header.patches_size} bytes exceeds {max_size}")
    if header.version >= 2 and written_path is None:
        raise DeltaError("delta reads back the new image, and it cannot be read back here")
    digest = hashlib.sha256()
    written = 0
    fd = os.open(source_path, os.O_RDONLY)
    written_fd: int | None = None
    try:
        if written_path is not None and header.version >= 2:
            written_fd = os.open(written_path, os.O_RDONLY)
        for index, segment in enumerate(header.segments):
            patch = read_exactly(read, segment.patch_size, f"patch of segment {index}")
            window = _window(fd, written_fd, segment, index)
            out = decode(header.engine, window, patch, segment.new_length)
            del window, patch
            if hashlib.sha256(out).hexdigest() != segment.sha256:
                raise DeltaError(f"delta segment {index} rebuilds other bytes than it states")
            digest.update(out)
            write(out)
            written += len(out)
            del out
            if progress is not None:
                progress(written)
    finally:
        os.close(fd)
        if written_fd is not None:
            os.close(written_fd)
    if read(1):
        raise DeltaError("delta has data after its last segment")
    if digest.hexdigest() != target.sha256:
        raise DeltaError("delta result does not match the signed sha256")
    return header


def hash_image(path: Path, size: int, *, chunk: int = 1024 * 1024) -> str:
    """The sha256 of the first ``size`` bytes of ``path`` (a slot may be longer).

    Raises:
        DeltaError: the file is shorter than ``size``.
        OSError: it cannot be read.
    """
    digest = hashlib.sha256()
    remaining = size
    with path.open("rb") as fh:
        while remaining:
            data = fh.read(min(chunk, remaining))
            if not data:
                raise DeltaError(f"{path} holds fewer than {size} bytes")
            digest.update(data)
            remaining -= len(data)
    return digest.hexdigest()


__all__ = ["apply_delta", "hash_image"]
