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

An encrypted payload (ADR 0008) stores that zstd stream encrypted in chunks
(:mod:`fleetcast.core.envelope`); :class:`PayloadDecoder` checks each chunk's
tag before its plaintext reaches the zstd decoder. Its resume points stay in
zstd-stream offsets: the download restarts at the start of the chunk holding
the frame boundary, and the already-installed head of that chunk is dropped
after the chunk verified.
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
from fleetcast.core.envelope import (
    TAG_SIZE,
    ChunkDecryptor,
    ChunkEncryptor,
    PayloadEncryption,
    chunk_count,
)
from fleetcast.core.manifest import Payload, SignedManifest
from fleetcast.exceptions import ArtifactFormatError, IncompatibleError, IntegrityError

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


class _EncryptingWriter:
    """Encrypts what is written into ``dst`` in chunks; counts and hashes the member."""

    def __init__(self, dst: IO[bytes], encryptor: ChunkEncryptor) -> None:
        self._dst = dst
        self._encryptor = encryptor
        self.size = 0
        self.hash = hashlib.sha256()

    def _out(self, data: bytes) -> None:
        self._dst.write(data)
        self.size += len(data)
        self.hash.update(data)

    def write(self, data: bytes) -> int:
        self._out(self._encryptor.update(data))
        return len(data)

    def close(self) -> None:
        self._out(self._encryptor.finalize())


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


def _resume_position(payload: Payload, start: int) -> tuple[int, int, int]:
    """``(member offset, first chunk, plaintext bytes to drop)`` to resume at zstd offset ``start``.

    Unencrypted: the member offset is ``start`` itself.
    """
    enc = payload.encryption
    if enc is None:
        return start, 0, 0
    chunk, skip = divmod(start, enc.chunk_size)
    last = chunk_count(payload.compressed_size, enc.chunk_size) - 1
    if chunk > last:  # resuming exactly at the end: re-read the last chunk
        chunk, skip = last, start - last * enc.chunk_size
    return chunk * (enc.chunk_size + TAG_SIZE), chunk, skip


def resume_offset(payload: Payload, start_compressed: int) -> int:
    """Where in the payload member a download resumes for a decoder started at ``start_compressed``.

    Raises:
        ValidationError: the payload's chunk layout is invalid.
    """
    return _resume_position(payload, start_compressed)[0]


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
    :meth:`rehash_output` before feeding the rest, from member offset
    :func:`resume_offset` on.

    Encrypted payloads need ``content_key``. Then ``compressed`` counts member
    (encrypted) bytes, while ``frame_offset`` and ``start_compressed`` are
    offsets in the decrypted zstd stream, so a resume point stays a frame
    boundary: the feed restarts at that chunk's first byte and the plaintext
    before the boundary is dropped once the chunk's tag verified.

    Raises:
        IncompatibleError: an encrypted payload and no ``content_key``.
        ValidationError: ``start_compressed`` lies outside an encrypted member.
    """

    def __init__(
        self,
        payload: Payload,
        *,
        start_compressed: int = 0,
        start_output: int = 0,
        content_key: bytes | None = None,
    ) -> None:
        self.payload = payload
        self.output = start_output
        self.frame_offset = start_compressed
        self.frame_output = start_output
        # zstd-stream bytes handed to the decompressor (== compressed, unless encrypted).
        self._fed = start_compressed
        member_offset, first_chunk, self._skip = _resume_position(payload, start_compressed)
        self.compressed = member_offset
        self._decryptor: ChunkDecryptor | None = None
        enc = payload.encryption
        if enc is not None:
            if content_key is None:
                raise IncompatibleError(f"no key to decrypt payload {payload.name}")
            self._decryptor = ChunkDecryptor(
                content_key,
                payload.name,
                nonce_prefix=enc.prefix_bytes,
                chunk_size=enc.chunk_size,
                member_size=payload.compressed_size,
                start_chunk=first_chunk,
            )
        self._raw_hash = hashlib.sha256()
        self._packed_hash: hashlib._Hash | None = hashlib.sha256() if member_offset == 0 else None
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
            IntegrityError: more bytes than the manifest allows (endless data),
                or an encrypted chunk that does not authenticate.
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
        if self._decryptor is not None:
            # Only chunks whose tag verified come back: nothing unauthenticated
            # reaches the decompressor, let alone a slot.
            data = self._decryptor.update(data)
            if self._skip:
                dropped = min(self._skip, len(data))
                data, self._skip = data[dropped:], self._skip - dropped
            if not data:
                return
        self._fed += len(data)
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
                self.frame_offset = self._fed - len(leftover)
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
        return self.frame_offset == self._fed

    def finish(self) -> None:
        """Check the payload is complete and both digests match the signed manifest.

        Raises:
            IntegrityError: truncated, or a hash mismatch (tampered payload).
        """
        p = self.payload
        incomplete = self._decryptor is not None and not self._decryptor.finished
        if self.compressed != p.compressed_size or not self.at_frame_boundary or incomplete:
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


def _check_member(payload: Payload, stream: IO[bytes]) -> None:
    """The stored member's length and sha256 only (an encrypted payload without its key)."""
    digest, size = hashlib.sha256(), 0
    while True:
        try:
            data = stream.read(_CHUNK)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ArtifactFormatError(f"payload {payload.name}: truncated") from e
        if not data:
            break
        size += len(data)
        if size > payload.compressed_size:
            raise IntegrityError(f"payload {payload.name}: longer than its signed size")
        digest.update(data)
    if size != payload.compressed_size:
        raise IntegrityError(
            f"payload {payload.name}: truncated at {size} of {payload.compressed_size} bytes"
        )
    if digest.hexdigest() != payload.compressed_sha256:
        raise IntegrityError(
            f"payload {payload.name}: encrypted member's sha256 does not match the signed manifest"
        )


def decode_payload(
    entry: PayloadEntry,
    stream: IO[bytes],
    sink: IO[bytes],
    *,
    content_key: bytes | None = None,
) -> bool:
    """Decompress one payload from ``stream`` into ``sink`` and verify it.

    An encrypted payload is decrypted with ``content_key``; without it, only
    the stored member's length and sha256 are checked (what a server that
    holds no key can check) and ``sink`` receives nothing.

    Returns:
        Whether the content itself was verified (False: encrypted, no key).

    Raises:
        InvalidDataError: corrupt, truncated or tampered payload.
    """
    if entry.payload.encryption is not None and content_key is None:
        _check_member(entry.payload, stream)
        return False
    decoder = PayloadDecoder(entry.payload, content_key=content_key)
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
    return True


def new_manifest_payload(
    source: PayloadSource,
    compressed: Path,
    level: int,
    *,
    encryption: tuple[bytes, PayloadEncryption] | None = None,
) -> Payload:
    """Compress ``source`` into ``compressed`` and describe it as a manifest payload.

    With ``encryption`` (content key, parameters), the compressed stream is
    encrypted in chunks and ``compressed_size``/``compressed_sha256``
    describe the encrypted member.
    """
    with source.path.open("rb") as src, compressed.open("wb") as dst:
        if encryption is None:
            size, sha, csize, csha = compress_payload(src, dst, level=level)
        else:
            key, params = encryption
            writer = _EncryptingWriter(
                dst,
                ChunkEncryptor(
                    key,
                    source.name,
                    nonce_prefix=params.prefix_bytes,
                    chunk_size=params.chunk_size,
                ),
            )
            size, sha, _, _ = compress_payload(src, writer, level=level)  # type: ignore[arg-type]
            writer.close()
            csize, csha = writer.size, writer.hash.hexdigest()
    return Payload(
        name=source.name,
        type=source.type,
        size=size,
        sha256=sha,
        compressed_size=csize,
        compressed_sha256=csha,
        meta=dict(source.meta),
        encryption=None if encryption is None else encryption[1],
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
    "resume_offset",
    "write_artifact",
]
