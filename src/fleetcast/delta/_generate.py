"""Making a delta: plan the segments, encode each one, write the file.

Runs on the server (in a worker thread: it is CPU-bound and never touches
the event loop). Both images are memory-mapped, so the server's memory holds
the plan's index and the windows and patches in flight, not the images.
Segments are encoded on ``workers`` threads (pyzstd and hdiffpatch release
the GIL while they work) and written in order. With ``verify`` the finished
file is applied once, exactly as a device would, before it is offered.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from fleetcast.delta._apply import apply_delta
from fleetcast.delta._engines import EngineOptions, encode
from fleetcast.delta._format import (
    ENGINES,
    DeltaHeader,
    DeltaLimits,
    ImageRef,
    Segment,
    max_patch_size,
)
from fleetcast.delta._plan import Buffer, SegmentPlan, plan_segments
from fleetcast.exceptions import DeltaError, UsageError

DEFAULT_SEGMENT_SIZE: Final = 8 * 1024 * 1024
DEFAULT_WINDOW_SIZE: Final = 16 * 1024 * 1024
_HASH_CHUNK: Final = 16 * 1024 * 1024


@dataclass(frozen=True)
class DeltaParams:
    """How to make a delta.

    Attributes:
        engine: ``hdiffpatch`` (smallest) or ``zstd`` (fastest).
        segment_size: bytes of the new image per segment (device memory).
        window_size: bytes of the window per segment (device memory).
        options: encoder tuning.
        workers: segments encoded in parallel.
        verify: apply the finished delta once and compare the result.
        reuse_written: windows may also name ranges of the new image already
            written by earlier segments, where the new image repeats content
            (format 2; older agents refuse such a delta and install the full
            artifact).
    """

    engine: str
    segment_size: int = DEFAULT_SEGMENT_SIZE
    window_size: int = DEFAULT_WINDOW_SIZE
    options: EngineOptions = field(default_factory=EngineOptions)
    workers: int = 1
    verify: bool = True
    reuse_written: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise UsageError(f"unknown delta engine {self.engine!r}; choose one of {ENGINES}")
        if self.segment_size <= 0 or self.window_size < 0 or self.workers < 1:
            raise UsageError("segment_size and workers must be positive, window_size >= 0")


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[Buffer]:
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield mapped


def _digest(data: Buffer) -> str:
    h = hashlib.sha256()
    for offset in range(0, len(data), _HASH_CHUNK):
        h.update(data[offset : offset + _HASH_CHUNK])
    return h.hexdigest()


def _encode_segment(
    old: Buffer, new: Buffer, plan: SegmentPlan, params: DeltaParams
) -> tuple[bytes, str]:
    window = b"".join(
        [old[o : o + n] for o, n in plan.old_ranges]
        + [new[o : o + n] for o, n in plan.written_ranges]
    )
    segment = new[plan.new_offset : plan.new_offset + plan.new_length]
    patch = encode(params.engine, window, segment, params.options)
    if len(patch) > max_patch_size(plan.new_length):
        raise DeltaError(f"segment at {plan.new_offset}: patch larger than any device accepts")
    return patch, hashlib.sha256(segment).hexdigest()


def generate_delta(old: Path, new: Path, out: Path, params: DeltaParams) -> DeltaHeader:
    """Write to ``out`` a delta that rebuilds the file ``new`` from the file ``old``.

    ``out`` appears complete or not at all (temp file, then rename).

    Returns:
        The delta's header (sizes, hashes, segments).

    Raises:
        UsageError: bad parameters, or the engine is not installed.
        DeltaError: verification failed (a bug in an engine: do not offer the delta).
    """
    tmp_dir = out.parent
    with _mapped(old) as old_buf, _mapped(new) as new_buf:
        source = ImageRef(len(old_buf), _digest(old_buf))
        target = ImageRef(len(new_buf), _digest(new_buf))
        plans = plan_segments(
            old_buf,
            new_buf,
            segment_size=params.segment_size,
            window_size=params.window_size,
            reuse_written=params.reuse_written,
        )
        segments: list[Segment] = []
        with (
            tempfile.TemporaryFile(dir=tmp_dir) as patches,
            ThreadPoolExecutor(max_workers=params.workers) as pool,
        ):
            results = pool.map(lambda p: _encode_segment(old_buf, new_buf, p, params), plans)
            for plan, (patch, digest) in zip(plans, results, strict=True):
                patches.write(patch)
                segments.append(
                    Segment(
                        plan.new_offset,
                        plan.new_length,
                        plan.old_ranges,
                        len(patch),
                        digest,
                        plan.written_ranges,
                    )
                )
            header = DeltaHeader(
                params.engine,
                source,
                target,
                params.segment_size,
                max((s.window_size for s in segments), default=0),
                tuple(segments),
            )
            fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=".delta-")
            try:
                with os.fdopen(fd, "wb") as dst:
                    dst.write(header.encode())
                    patches.seek(0)
                    shutil.copyfileobj(patches, dst, 1024 * 1024)
                if params.verify:
                    _verify(Path(name), old, new, header, params)
                os.replace(name, out)
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise
    return header


class _Discard:
    def write(self, data: bytes) -> None:
        pass


def _verify(delta: Path, old: Path, new: Path, header: DeltaHeader, params: DeltaParams) -> None:
    # Written ranges are read back from the new image itself: every segment
    # before them was checked against its sha256 as it was rebuilt, so they
    # hold exactly what a device reads back from its slot at that point.
    limits = DeltaLimits(
        max_segment_size=params.segment_size,
        max_window_size=max(params.window_size, header.window_size),
        engines=(params.engine,),
    )
    with delta.open("rb") as fh:
        apply_delta(
            fh.read,
            old,
            _Discard().write,
            written_path=new,
            source=header.source,
            target=header.target,
            limits=limits,
            max_size=delta.stat().st_size,
        )


__all__ = ["DEFAULT_SEGMENT_SIZE", "DEFAULT_WINDOW_SIZE", "DeltaParams", "generate_delta"]
