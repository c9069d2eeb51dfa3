"""Generating and applying deltas: both engines, bounded segments, and every refusal."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from fleetcast.delta import (
    DeltaHeader,
    DeltaLimits,
    DeltaParams,
    ImageRef,
    apply_delta,
    generate_delta,
    hash_image,
    parse_header,
)
from fleetcast.delta._engines import hdiff_sizes
from fleetcast.delta._format import MARKER
from fleetcast.exceptions import DeltaError, UsageError
from tests.delta.conftest import Pair, make_pair, noise

# Small segments and windows so that a 1 MiB image needs many of both.
SMALL = {"segment_size": 64 * 1024, "window_size": 160 * 1024}
LIMITS = DeltaLimits(max_segment_size=64 * 1024, max_window_size=160 * 1024)


def _ref(path: Path) -> ImageRef:
    data = path.read_bytes()
    return ImageRef(len(data), hashlib.sha256(data).hexdigest())


def _apply(pair: Pair, delta: bytes, *, limits: DeltaLimits = LIMITS, **kw: object) -> bytes:
    out = io.BytesIO()
    args: dict[str, object] = {
        "source": _ref(pair.old),
        "target": _ref(pair.new),
        "limits": limits,
        "max_size": len(delta),
    }
    args.update(kw)
    apply_delta(io.BytesIO(delta).read, pair.old, out.write, **args)  # type: ignore[arg-type]
    return out.getvalue()


def _generate(pair: Pair, tmp_path: Path, engine: str, **params: object) -> bytes:
    out = tmp_path / f"{engine}.delta"
    generate_delta(pair.old, pair.new, out, DeltaParams(engine, **{**SMALL, **params}))  # type: ignore[arg-type]
    return out.read_bytes()


@pytest.mark.parametrize("engine", ["hdiffpatch", "zstd"])
def test_round_trip_rebuilds_the_new_image_from_a_small_delta(
    pair: Pair, tmp_path: Path, engine: str
) -> None:
    delta = _generate(pair, tmp_path, engine)
    assert _apply(pair, delta) == pair.new_bytes
    # 1 MiB of incompressible data, of which ~3.4 KiB really changed.
    assert len(delta) < 40 * 1024


def test_segments_follow_a_shift_of_the_old_image(pair: Pair, tmp_path: Path) -> None:
    """Behind the grown member, each segment's window starts 2.5 KiB earlier in the old
    image: the planner found the displacement, so the patches stay tiny."""
    delta = _generate(pair, tmp_path, "zstd")
    header, _ = parse_header(io.BytesIO(delta).read, LIMITS)
    assert len(header.segments) == 17  # 1 MiB + 2.5 KiB in 64 KiB segments
    assert all(s.window_size <= 160 * 1024 for s in header.segments)
    late = header.segments[12]
    assert any(o <= late.new_offset - 2560 < o + n for o, n in late.old_ranges)
    assert late.patch_size < 1024


def test_whole_old_image_is_the_window_when_it_fits(tmp_path: Path) -> None:
    old = noise(5, 100_000)
    new = old[50_000:] + old[:50_000]  # content moved far: only a whole-image window finds it
    pair = make_pair(tmp_path, old, new)
    delta = _generate(pair, tmp_path, "hdiffpatch")
    header, _ = parse_header(io.BytesIO(delta).read, LIMITS)
    assert [s.old_ranges for s in header.segments] == [((0, 100_000),), ((0, 100_000),)]
    assert _apply(pair, delta) == new
    assert len(delta) < 2000


def test_empty_and_tiny_images(tmp_path: Path) -> None:
    for name, old, new in (("a", b"", b"hello"), ("b", b"hello", b""), ("c", b"", b"")):
        pair = make_pair(tmp_path / name, old, new)
        for engine in ("hdiffpatch", "zstd"):
            assert _apply(pair, _generate(pair, tmp_path / name, engine)) == new


def test_delta_for_another_source_is_refused(pair: Pair, tmp_path: Path) -> None:
    delta = _generate(pair, tmp_path, "zstd")
    other = ImageRef(pair.old.stat().st_size, "0" * 64)
    with pytest.raises(DeltaError, match="made from"):
        _apply(pair, delta, source=other)


def test_delta_for_another_target_is_refused(pair: Pair, tmp_path: Path) -> None:
    delta = _generate(pair, tmp_path, "zstd")
    with pytest.raises(DeltaError, match="signed manifest"):
        _apply(pair, delta, target=ImageRef(pair.new.stat().st_size, "1" * 64))


@pytest.mark.parametrize("engine", ["hdiffpatch", "zstd"])
def test_a_corrupt_patch_is_caught(pair: Pair, tmp_path: Path, engine: str) -> None:
    delta = bytearray(_generate(pair, tmp_path, engine))
    header, start = parse_header(io.BytesIO(bytes(delta)).read, LIMITS)
    # Flip a byte in the middle of the largest patch.
    offset = start
    largest = max(header.segments, key=lambda s: s.patch_size)
    for segment in header.segments:
        if segment is largest:
            break
        offset += segment.patch_size
    delta[offset + largest.patch_size // 2] ^= 0xFF
    with pytest.raises(DeltaError):
        _apply(pair, bytes(delta))


def test_a_changed_source_image_is_caught_even_with_a_matching_header(
    pair: Pair, tmp_path: Path
) -> None:
    """The header names the right source, but the slot's bytes changed (a rootfs mounted
    read-write): a segment rebuilds other bytes, and the apply fails."""
    delta = _generate(pair, tmp_path, "zstd")
    source = _ref(pair.old)
    data = bytearray(pair.old.read_bytes())
    data[200_000:200_100] = bytes(100)
    pair.old.write_bytes(bytes(data))
    with pytest.raises(DeltaError):
        _apply(pair, delta, source=source)


def test_truncated_and_trailing_data_are_refused(pair: Pair, tmp_path: Path) -> None:
    delta = _generate(pair, tmp_path, "zstd")
    with pytest.raises(DeltaError, match="truncated"):
        _apply(pair, delta[:-10], max_size=len(delta))
    with pytest.raises(DeltaError, match="after its last segment"):
        _apply(pair, delta + b"x", max_size=len(delta) + 1)


def test_a_delta_over_the_size_cap_is_refused_before_any_patch(pair: Pair, tmp_path: Path) -> None:
    delta = _generate(pair, tmp_path, "zstd")
    with pytest.raises(DeltaError, match="exceeds"):
        _apply(pair, delta, max_size=len(delta) - 1)


def test_segments_or_windows_over_the_device_limits_are_refused(pair: Pair, tmp_path: Path) -> None:
    delta = _generate(pair, tmp_path, "zstd")
    with pytest.raises(DeltaError, match="segments of"):
        _apply(pair, delta, limits=DeltaLimits(max_segment_size=32 * 1024))
    with pytest.raises(DeltaError, match="windows of"):
        _apply(pair, delta, limits=DeltaLimits(max_window_size=64 * 1024))
    with pytest.raises(DeltaError, match="not supported"):
        _apply(pair, delta, limits=DeltaLimits(engines=("hdiffpatch",)))


def test_a_header_that_lies_about_its_segments_is_refused(pair: Pair) -> None:
    good = DeltaHeader(
        "zstd", _ref(pair.old), _ref(pair.new), 64 * 1024, 64 * 1024, segments=()
    ).to_dict()
    cases = [
        {**good},  # no segments, but the target has bytes
        {
            **good,
            "segments": [
                {"new": [0, 10], "old": [[0, 10]], "patch": 5, "sha256": "a" * 64},
                {"new": [5, 10], "old": [], "patch": 5, "sha256": "a" * 64},
            ],
        },
        {
            **good,
            "segments": [{"new": [0, 10], "old": [[2**40, 10]], "patch": 5, "sha256": "a" * 64}],
        },
        {**good, "segments": [{"new": [0, 10], "old": [], "patch": 2**40, "sha256": "a" * 64}]},
        {**good, "engine": "bsdiff"},
        {**good, "segment_size": "big"},
    ]
    import json

    for case in cases:
        body = json.dumps(case).encode()
        data = MARKER + len(body).to_bytes(4, "big") + body
        with pytest.raises(DeltaError):
            parse_header(io.BytesIO(data).read, LIMITS)
    with pytest.raises(DeltaError, match="bad marker"):
        parse_header(io.BytesIO(b"x" * 64).read, LIMITS)
    with pytest.raises(DeltaError, match="exceeds"):
        parse_header(io.BytesIO(MARKER + (2**31).to_bytes(4, "big")).read, LIMITS)


def test_hdiffpatch_sizes_are_checked_before_the_library_allocates(tmp_path: Path) -> None:
    import hdiffpatch

    patch = hdiffpatch.diff(b"a" * 1000, b"b" * 3000, "lzma")
    assert hdiff_sizes(patch) == (3000, 1000)
    from fleetcast.delta._engines import decode

    with pytest.raises(DeltaError, match="segment is"):
        decode("hdiffpatch", b"a" * 1000, patch, 2000)
    with pytest.raises(DeltaError, match="bad magic"):
        decode("hdiffpatch", b"a" * 1000, b"nope" + patch, 3000)
    assert decode("hdiffpatch", b"a" * 1000, patch, 3000) == b"b" * 3000


def test_zstd_patch_declaring_another_length_is_refused() -> None:
    import pyzstd

    from fleetcast.delta._engines import decode

    frame = pyzstd.compress(b"x" * 5000)
    with pytest.raises(DeltaError, match="declares"):
        decode("zstd", b"", frame, 4000)
    with pytest.raises(DeltaError, match="not a zstd frame"):
        decode("zstd", b"", b"garbage", 4000)


def test_params_and_hash_image(pair: Pair, tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        DeltaParams("bsdiff")
    with pytest.raises(UsageError):
        DeltaParams("zstd", segment_size=0)
    data = pair.old.read_bytes()
    assert hash_image(pair.old, 1000) == hashlib.sha256(data[:1000]).hexdigest()
    with pytest.raises(DeltaError, match="fewer than"):
        hash_image(pair.old, len(data) + 1)


def test_generation_output_appears_atomically(pair: Pair, tmp_path: Path) -> None:
    out = tmp_path / "d.delta"
    generate_delta(pair.old, pair.new, out, DeltaParams("zstd", **SMALL))  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".delta-")] == []
    assert out.read_bytes().startswith(MARKER)
