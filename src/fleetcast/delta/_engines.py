"""The two patch engines, applied per segment: window of the old image + patch -> segment.

``hdiffpatch``: HDiffPatch (suffix-array matching, covers + LZMA-compressed
differences), the smallest patches. The ``hdiffpatch`` package only patches
whole buffers in memory, which is why every patch covers one bounded segment
and one bounded window. Its header states the old and new sizes; both are
checked against the delta header before the library sees the patch, so a
patch cannot make it allocate more than the segment.

``zstd``: zstd with the window as a *prefix* (``ZSTD_CCtx_refPrefix``, the
mechanism behind ``zstd --patch-from``) and long-distance matching, so
matches anywhere in the window are found at zstd speed. Decoding uses a
fresh decompressor per segment with ``windowLogMax`` bounded by the window
plus the segment, and output capped at the segment length.

The agent always has ``zstd`` (pyzstd is a core dependency); ``hdiffpatch``
is optional on devices and required on the server (``fleetcast[server]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pyzstd

from fleetcast.delta._capability import available_engines
from fleetcast.exceptions import DeltaError, UsageError

_HDIFF_MAGIC: Final = b"HDIFF13&"
_MAX_WINDOW_LOG: Final = 30


@dataclass(frozen=True)
class EngineOptions:
    """Tuning of the encoders (the decoders need none).

    Attributes:
        zstd_level: zstd compression level of the ``zstd`` engine.
        lzma_level: LZMA level of the compressed streams of ``hdiffpatch`` patches.
    """

    zstd_level: int = 3
    lzma_level: int = 9


def _window_log(total: int) -> int:
    return min(_MAX_WINDOW_LOG, max(10, (max(total, 1) - 1).bit_length()))


def encode(engine: str, window: bytes, new: bytes, options: EngineOptions) -> bytes:
    """Make the patch that rebuilds ``new`` from ``window``.

    Raises:
        UsageError: unknown engine, or ``hdiffpatch`` is not installed.
    """
    if engine == "zstd":
        return _zstd_encode(window, new, options)
    if engine == "hdiffpatch":
        return _hdiff_encode(window, new, options)
    raise UsageError(f"unknown delta engine {engine!r}")


def decode(engine: str, window: bytes, patch: bytes, new_length: int) -> bytes:
    """Rebuild a segment of exactly ``new_length`` bytes from ``window`` and ``patch``.

    Raises:
        DeltaError: the patch is corrupt, does not fit the window, yields
            another length, or the engine is unavailable.
    """
    if engine == "zstd":
        out = _zstd_decode(window, patch, new_length)
    elif engine == "hdiffpatch":
        out = _hdiff_decode(window, patch, new_length)
    else:
        raise DeltaError(f"unknown delta engine {engine!r}")
    if len(out) != new_length:
        raise DeltaError(f"{engine} patch produced {len(out)} bytes, expected {new_length}")
    return out


# --------------------------------------------------------------------------- zstd


def _zstd_options(window: int, new: int, level: int) -> dict[int, int]:
    return {
        pyzstd.CParameter.compressionLevel: level,
        pyzstd.CParameter.windowLog: _window_log(window + new),
        pyzstd.CParameter.enableLongDistanceMatching: 1,
        pyzstd.CParameter.contentSizeFlag: 1,
        pyzstd.CParameter.checksumFlag: 0,  # the segment and image sha256 are checked instead
    }


def _zstd_encode(window: bytes, new: bytes, options: EngineOptions) -> bytes:
    opts = _zstd_options(len(window), len(new), options.zstd_level)
    if not window:
        return pyzstd.compress(new, level_or_option=opts)
    prefix = pyzstd.ZstdDict(window, is_raw=True)
    return pyzstd.compress(new, level_or_option=opts, zstd_dict=prefix.as_prefix)


def _zstd_decode(window: bytes, patch: bytes, new_length: int) -> bytes:
    try:
        info = pyzstd.get_frame_info(patch)
    except pyzstd.ZstdError as e:
        raise DeltaError(f"zstd patch is not a zstd frame: {e}") from e
    if info.decompressed_size != new_length:
        raise DeltaError(
            f"zstd patch declares {info.decompressed_size} bytes, the segment has {new_length}"
        )
    option: dict[int, int] = {pyzstd.DParameter.windowLogMax: _window_log(len(window) + new_length)}
    try:
        if window:
            prefix = pyzstd.ZstdDict(window, is_raw=True)
            decompressor = pyzstd.ZstdDecompressor(zstd_dict=prefix.as_prefix, option=option)
        else:
            decompressor = pyzstd.ZstdDecompressor(option=option)
        out = decompressor.decompress(patch, max_length=new_length)
        complete = decompressor.eof and not decompressor.unused_data
    except pyzstd.ZstdError as e:
        raise DeltaError(f"zstd patch is corrupt: {e}") from e
    if not complete:
        raise DeltaError("zstd patch does not end where the segment does")
    return out


# --------------------------------------------------------------------------- hdiffpatch


def _hdiff_encode(window: bytes, new: bytes, options: EngineOptions) -> bytes:
    try:
        import hdiffpatch
    except ImportError as e:
        raise UsageError("the hdiffpatch engine needs the 'hdiffpatch' package") from e
    dict_log = min(26, max(12, _window_log(len(new))))
    config = hdiffpatch.LzmaConfig(level=options.lzma_level, window=dict_log)
    return hdiffpatch.diff(window, new, config, validate=False, big_cache_match=True)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """HDiffPatch's packed unsigned integer: 7 bits a byte, most significant first."""
    value = 0
    for _ in range(10):
        if pos >= len(data):
            raise DeltaError("hdiffpatch patch header is truncated")
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos
    raise DeltaError("hdiffpatch patch header has an overlong number")


def hdiff_sizes(patch: bytes) -> tuple[int, int]:
    """The ``(new_size, old_size)`` an HDiffPatch patch states in its header.

    Raises:
        DeltaError: not an HDiffPatch (HDIFF13) patch.
    """
    if not patch.startswith(_HDIFF_MAGIC):
        raise DeltaError("not an hdiffpatch patch (bad magic)")
    end = patch.find(b"\0", len(_HDIFF_MAGIC), len(_HDIFF_MAGIC) + 16)
    if end < 0:
        raise DeltaError("hdiffpatch patch header names no compressor")
    new_size, pos = _read_varint(patch, end + 1)
    old_size, _ = _read_varint(patch, pos)
    return new_size, old_size


def _hdiff_decode(window: bytes, patch: bytes, new_length: int) -> bytes:
    try:
        import hdiffpatch
    except ImportError as e:
        raise DeltaError("this device cannot apply hdiffpatch deltas") from e
    # The library allocates the new size its header states: check it first.
    new_size, old_size = hdiff_sizes(patch)
    if new_size != new_length or old_size != len(window):
        raise DeltaError(
            f"hdiffpatch patch is for {old_size} -> {new_size} bytes, "
            f"the segment is {len(window)} -> {new_length}"
        )
    try:
        return hdiffpatch.apply(window, patch)
    except (hdiffpatch.HDiffPatchError, MemoryError, ValueError) as e:
        raise DeltaError(f"hdiffpatch patch cannot be applied: {e}") from e


__all__ = ["EngineOptions", "available_engines", "decode", "encode", "hdiff_sizes"]
