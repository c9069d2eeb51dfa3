"""The Fleetcast artifact file: a POSIX tar stream read front to back.

Layout (see docs/adr/0001-artifact-format.md)::

    fleetcast-artifact        b"fleetcast-artifact 1\\n"  (format marker)
    manifest.json             {"signed": <manifest>, "signatures": [...]}
    payloads/<name>.zst       one member per payload, in manifest order

Each payload is a sequence of independent zstd frames of at most
``FRAME_SIZE`` uncompressed bytes, each with its content checksum. A device
can therefore install while downloading, and resume an interrupted download
at any frame boundary (it re-reads what it already wrote to rebuild the
hash), without ever storing the artifact twice.

Reading never trusts a length it has not verified: the manifest member is
capped at ``MAX_MANIFEST_SIZE`` and every payload at its signed
``compressed_size`` and ``size``.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import pyzstd

from fleetcast.core.canonical import canonical_json, parse_json_object
from fleetcast.core.manifest import Payload, SignedManifest
from fleetcast.exceptions import ArtifactFormatError, IntegrityError

MARKER_NAME: Final = "fleetcast-artifact"
MARKER: Final = b"fleetcast-artifact 1\n"
MANIFEST_NAME: Final = "manifest.json"
MAX_MANIFEST_SIZE: Final = 1024 * 1024
FRAME_SIZE: Final = 1024 * 1024
_CHUNK: Final = 64 * 1024
_MAX_OUTPUT_STEP: Final = 256 * 1024


def payload_member_name(payload_name: str) -> str:
    return f"payloads/{payload_name}.zst"


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class PayloadSource:
    """A file to pack as a payload: its name, type, path and free-form metadata."""

    name: str
    type: str
    path: Path
    meta: dict[str, str]


def compress_payload(
    src: IO[bytes], dst: IO[bytes], *, level: int = 3
) -> tuple[int, str, int, str]:
    """Compress ``src`` into independent zstd frames written to ``dst``.

    Returns:
        ``(size, sha256, compressed_size, compressed_sha256)``.
    """
    raw_hash, packed_hash = hashlib.sha256(), hashlib.sha256()
    size = packed = 0
    options: dict[int, int] = {
        pyzstd.CParameter.compressionLevel: level,
        pyzstd.CParameter.checksumFlag: 1,
    }
    while True:
        block = src.read(FRAME_SIZE)
        if not block and size > 0:
            break
        raw_hash.update(block)
        size += len(block)
        frame = pyzstd.compress(block, level_or_option=options)
        packed_hash.update(frame)
        packed += len(frame)
        dst.write(frame)
        if not block:  # an empty payload is still one (empty) frame
            break
    return size, raw_hash.hexdigest(), packed, packed_hash.hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_artifact(
    out: IO[bytes],
    signed: SignedManifest,
    compressed_payloads: dict[str, Path],
) -> None:
    """Write an artifact: marker, signed manifest, then the compressed payload files."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MARKER_NAME, MARKER)
        _add_bytes(tar, MANIFEST_NAME, canonical_json(signed.to_dict()))
        for payload in signed.manifest.payloads:
            path = compressed_payloads[payload.name]
            info = tarfile.TarInfo(payload_member_name(payload.name))
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)


# --------------------------------------------------------------------------- reading


class _CountingReader(io.RawIOBase):
    """Wraps a stream and counts bytes consumed, so member offsets are known."""

    def __init__(self, raw: IO[bytes], start: int = 0) -> None:
        self._raw = raw
        self.position = start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.position += n
        return n


@dataclass(frozen=True)
class PayloadEntry:
    """A payload member found in the artifact, with its byte offset in the file."""

    payload: Payload
    data_offset: int


class ArtifactReader:
    """Reads an artifact from a forward-only stream (a file or an HTTP body).

    Call :meth:`read_manifest` first, then :meth:`payloads` yields each payload
    member with a bounded stream of its compressed bytes.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._counter = _CountingReader(stream)
        try:
            self._tar = tarfile.open(fileobj=self._counter, mode="r|")  # noqa: SIM115
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ArtifactFormatError(f"not a Fleetcast artifact (tar): {e}") from e
        self._signed: SignedManifest | None = None

    def _next_member(self, expected: str) -> tarfile.TarInfo:
        try:
            member = self._tar.next()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ArtifactFormatError(f"artifact is truncated or corrupt before {expected}") from e
        if member is None:
            raise ArtifactFormatError(f"artifact ends before {expected}")
        if member.name != expected or not member.isfile():
            raise ArtifactFormatError(f"expected member {expected!r}, found {member.name!r}")
        return member

    def _read_small(self, member: tarfile.TarInfo, limit: int) -> bytes:
        if member.size > limit:
            raise ArtifactFormatError(f"{member.name} is {member.size} bytes, more than {limit}")
        fh = self._tar.extractfile(member)
        assert fh is not None
        try:
            data = fh.read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ArtifactFormatError(f"artifact is truncated in {member.name}") from e
        if len(data) != member.size:
            raise ArtifactFormatError(f"artifact is truncated in {member.name}")
        return data

    def read_manifest(self) -> SignedManifest:
        """Read and parse the marker and the signed manifest (not yet verified).

        Raises:
            ArtifactFormatError: not an artifact, or truncated.
            ValidationError: the manifest is malformed.
        """
        marker = self._read_small(self._next_member(MARKER_NAME), len(MARKER))
        if marker != MARKER:
            raise ArtifactFormatError(f"unsupported artifact marker {marker!r}")
        data = self._read_small(self._next_member(MANIFEST_NAME), MAX_MANIFEST_SIZE)
        self._signed = SignedManifest.from_dict(parse_json_object(data, what="manifest.json"))
        return self._signed

    def payloads(self) -> Iterator[tuple[PayloadEntry, IO[bytes]]]:
        """Yield each payload entry and a stream of exactly its compressed bytes.

        Raises:
            ArtifactFormatError: a member is missing, misnamed or of the wrong size.
        """
        if self._signed is None:
            raise ArtifactFormatError("read_manifest() must come first")
        for payload in self._signed.manifest.payloads:
            member = self._next_member(payload_member_name(payload.name))
            if member.size != payload.compressed_size:
                raise IntegrityError(
                    f"payload {payload.name}: member is {member.size} bytes, "
                    f"manifest says {payload.compressed_size}"
                )
            fh = self._tar.extractfile(member)
            assert fh is not None
            yield PayloadEntry(payload, member.offset_data), fh
        try:
            extra = self._tar.next()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ArtifactFormatError("artifact is truncated after its payloads") from e
        if extra is not None:
            raise ArtifactFormatError(f"unexpected member {extra.name!r} after the payloads")


class PayloadDecoder:
    """Turns a payload's compressed bytes into its content, checking every bound.

    Feed compressed bytes with :meth:`decode` (any chunking); it yields the
    decompressed bytes piece by piece, never more than ``_MAX_OUTPUT_STEP`` at
    once, so memory stays bounded however well the input compresses (1 MiB of
    zeros is a 40-byte frame: one 64 KiB network chunk can hold gigabytes).
    Once the generator is exhausted, ``frame_offset`` / ``frame_output`` give
    the last complete frame boundary, a safe resume point. :meth:`finish`
    checks lengths and both sha256 digests.

    Resuming: build a decoder with ``start_compressed``/``start_output`` at a
    frame boundary and pass the already-installed content through
    :meth:`rehash_output` before feeding the rest.
    """

    def __init__(
        self, payload: Payload, *, start_compressed: int = 0, start_output: int = 0
    ) -> None:
        self.payload = payload
        self.compressed = start_compressed
        self.output = start_output
        self.frame_offset = start_compressed
        self.frame_output = start_output
        self._raw_hash = hashlib.sha256()
        self._packed_hash: hashlib._Hash | None = (
            hashlib.sha256() if start_compressed == 0 else None
        )
        self._decompressor = pyzstd.ZstdDecompressor()

    def rehash_output(self, data: bytes) -> None:
        """Feed already-installed content (when resuming) into the content hash."""
        self._raw_hash.update(data)

    def feed(self, data: bytes) -> bytes:
        """Decompress ``data``; return all the content bytes now available.

        Convenient for small payloads only: the result can be as large as the
        signed ``size``. Streaming code uses :meth:`decode`.

        Raises:
            IntegrityError: more bytes than the manifest allows (endless data).
            ArtifactFormatError: the zstd stream is corrupt.
        """
        return b"".join(self.decode(data))

    def decode(self, data: bytes) -> Iterator[bytes]:
        """Decompress ``data``, yielding content in pieces of at most 256 KiB.

        Consume the generator completely before feeding more; the resume point
        (``frame_offset``/``frame_output``) is up to date once it is exhausted.

        Raises:
            IntegrityError: more bytes than the manifest allows (endless data).
            ArtifactFormatError: the zstd stream is corrupt.
        """
        if self.compressed + len(data) > self.payload.compressed_size:
            raise IntegrityError(
                f"payload {self.payload.name}: more than the signed "
                f"{self.payload.compressed_size} compressed bytes"
            )
        self.compressed += len(data)
        if self._packed_hash is not None:
            self._packed_hash.update(data)
        buffer = data
        while True:
            try:
                chunk = self._decompressor.decompress(buffer, max_length=_MAX_OUTPUT_STEP)
            except pyzstd.ZstdError as e:
                raise ArtifactFormatError(f"payload {self.payload.name}: corrupt zstd data") from e
            self._account(chunk)
            if chunk:
                yield chunk
            if self._decompressor.eof:
                leftover = self._decompressor.unused_data
                # Every byte fed so far has been handed to a decompressor, so
                # the frame ended len(leftover) bytes before the feed position.
                self.frame_offset = self.compressed - len(leftover)
                self.frame_output = self.output
                self._decompressor = pyzstd.ZstdDecompressor()
                buffer = leftover
                if not buffer:
                    break
            elif self._decompressor.needs_input:
                break
            else:
                # Output was capped: drain it before accepting more input, so a
                # tiny frame that claims gigabytes never lands in memory at once.
                buffer = b""

    def _account(self, chunk: bytes) -> None:
        if self.output + len(chunk) > self.payload.size:
            raise IntegrityError(
                f"payload {self.payload.name}: decompresses to more than the signed "
                f"{self.payload.size} bytes"
            )
        self.output += len(chunk)
        self._raw_hash.update(chunk)

    @property
    def at_frame_boundary(self) -> bool:
        return self.frame_offset == self.compressed

    def finish(self) -> None:
        """Check the payload is complete and both digests match the signed manifest.

        Raises:
            IntegrityError: truncated, or a hash mismatch (tampered payload).
        """
        p = self.payload
        if self.compressed != p.compressed_size or not self.at_frame_boundary:
            raise IntegrityError(
                f"payload {p.name}: truncated at {self.compressed} of {p.compressed_size} bytes"
            )
        if self.output != p.size:
            raise IntegrityError(f"payload {p.name}: {self.output} bytes, signed size {p.size}")
        if self._raw_hash.hexdigest() != p.sha256:
            raise IntegrityError(f"payload {p.name}: sha256 does not match the signed manifest")
        if self._packed_hash is not None and self._packed_hash.hexdigest() != p.compressed_sha256:
            raise IntegrityError(
                f"payload {p.name}: compressed sha256 does not match the signed manifest"
            )


def decode_payload(entry: PayloadEntry, stream: IO[bytes], sink: IO[bytes]) -> None:
    """Decompress one payload from ``stream`` into ``sink`` and verify it.

    Raises:
        InvalidDataError: corrupt, truncated or tampered payload.
    """
    decoder = PayloadDecoder(entry.payload)
    while True:
        try:
            data = stream.read(_CHUNK)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ArtifactFormatError(f"payload {entry.payload.name}: truncated") from e
        if not data:
            break
        for piece in decoder.decode(data):
            sink.write(piece)
    decoder.finish()


def new_manifest_payload(source: PayloadSource, compressed: Path, level: int) -> Payload:
    """Compress ``source`` into ``compressed`` and describe it as a manifest payload."""
    with source.path.open("rb") as src, compressed.open("wb") as dst:
        size, sha, csize, csha = compress_payload(src, dst, level=level)
    return Payload(
        name=source.name,
        type=source.type,
        size=size,
        sha256=sha,
        compressed_size=csize,
        compressed_sha256=csha,
        meta=dict(source.meta),
    )


__all__ = [
    "FRAME_SIZE",
    "ArtifactReader",
    "PayloadDecoder",
    "PayloadEntry",
    "PayloadSource",
    "compress_payload",
    "decode_payload",
    "new_manifest_payload",
    "payload_member_name",
    "write_artifact",
]
