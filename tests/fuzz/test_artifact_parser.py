"""The artifact reader and payload decoder on hostile bytes.

Whatever arrives (a flipped bit, a truncated download, a spliced file, pure
noise, a zstd bomb), reading an artifact either yields exactly the content
the vendor signed or raises an ``InvalidDataError``: never another exception,
never a hang, never memory beyond a fixed bound per step.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from fleetcast.artifact import ArtifactReader, PayloadDecoder, PayloadSource, build_artifact
from fleetcast.artifact._format import MARKER, compress_payload
from fleetcast.core.manifest import Payload
from fleetcast.exceptions import InvalidDataError

#: The decoder's documented bound on one piece of output (``_MAX_OUTPUT_STEP``).
MAX_PIECE = 256 * 1024

_KEY = Ed25519PrivateKey.generate()
_PUB = _KEY.public_key()


def _files_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"setting = 1\n" * 50
        info = tarfile.TarInfo("etc/app.conf")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _build(tmp: Path) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Two valid artifacts: an image of two zstd frames, and files + script payloads."""
    tmp.mkdir(parents=True, exist_ok=True)
    image = (hashlib.sha256(b"fuzz").digest() * 40000)[: 1024 * 1024 + 4096]
    (tmp / "image").write_bytes(image)
    build_artifact(
        tmp / "image.fca",
        name="acme-fw",
        version="1.2.3",
        compatible=["acme-gw"],
        payloads=[PayloadSource("rootfs", "rootfs-image", tmp / "image", {})],
        key=_KEY,
    )
    conf, script = _files_tar(), b"#!/bin/sh\necho hello\n"
    (tmp / "conf").write_bytes(conf)
    (tmp / "script").write_bytes(script)
    build_artifact(
        tmp / "inplace.fca",
        name="acme-conf",
        version="2.0.0-rc.1",
        compatible=["acme-gw", "acme-gw2"],
        payloads=[
            PayloadSource("conf", "files", tmp / "conf", {"dest": "/etc/acme"}),
            PayloadSource("post", "script", tmp / "script", {}),
        ],
        key=_KEY,
    )
    return {
        "image": ((tmp / "image.fca").read_bytes(), {"rootfs": hashlib.sha256(image).hexdigest()}),
        "inplace": (
            (tmp / "inplace.fca").read_bytes(),
            {
                "conf": hashlib.sha256(conf).hexdigest(),
                "post": hashlib.sha256(script).hexdigest(),
            },
        ),
    }


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, dict[str, str]]]:
    return _build(tmp_path_factory.mktemp("fuzz-artifacts"))


class _HashingSink:
    """Where decoded content goes: hashed, and every piece checked against the bound."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.largest = 0

    def write(self, data: bytes) -> int:
        self.largest = max(self.largest, len(data))
        self.hash.update(data)
        return len(data)


def read_everything(data: bytes, chunk: int = 64 * 1024) -> dict[str, str]:
    """Read, decode and verify an artifact like a device; return payload name -> sha256.

    Raises:
        InvalidDataError: anything wrong with ``data``.
    """
    reader = ArtifactReader(io.BytesIO(data))
    signed = reader.read_manifest()
    signed.verify([_PUB])
    digests = {}
    for entry, stream in reader.payloads():
        decoder = PayloadDecoder(entry.payload)
        sink = _HashingSink()
        while True:
            try:
                block = stream.read(chunk)
            except (tarfile.TarError, EOFError, OSError) as e:
                # What the agent's installer maps to ArtifactFormatError.
                raise _Truncated(str(e)) from e
            if not block:
                break
            for piece in decoder.decode(block):
                sink.write(piece)
        assert sink.largest <= MAX_PIECE
        decoder.finish()
        digests[entry.payload.name] = sink.hash.hexdigest()
    return digests


class _Truncated(InvalidDataError):
    """The tar stream ended inside a member (the installer reports ArtifactFormatError)."""


def _mutations() -> st.SearchStrategy[tuple[str, list[tuple[int, int]], int, bytes]]:
    return st.tuples(
        st.sampled_from(["flip", "truncate", "overwrite", "insert", "delete"]),
        st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), min_size=1, max_size=8),
        st.integers(min_value=0),
        st.binary(min_size=1, max_size=600),
    )


def mutate(data: bytes, how: tuple[str, list[tuple[int, int]], int, bytes]) -> bytes:
    kind, flips, where, noise = how
    out = bytearray(data)
    at = where % len(out)
    if kind == "flip":
        for position, mask in flips:
            out[position % len(out)] ^= mask
    elif kind == "truncate":
        del out[at:]
    elif kind == "overwrite":
        out[at : at + len(noise)] = noise
    elif kind == "insert":
        out[at:at] = noise
    else:
        del out[at : at + len(noise)]
    return bytes(out)


@given(which=st.sampled_from(["image", "inplace"]), how=_mutations(), chunk=st.integers(1, 70000))
def test_a_mutated_artifact_is_refused_or_yields_exactly_the_signed_content(
    artifacts: dict[str, tuple[bytes, dict[str, str]]],
    which: str,
    how: tuple[str, list[tuple[int, int]], int, bytes],
    chunk: int,
) -> None:
    """A flipped, cut, spliced or padded artifact: InvalidDataError, or (when the
    change hit only bytes that carry no meaning, such as a tar mtime or the
    trailing padding) exactly the content the vendor signed. Nothing else."""
    original, expected = artifacts[which]
    data = mutate(original, how)
    try:
        digests = read_everything(data, chunk)
    except InvalidDataError:
        return
    assert digests == expected


@given(noise=st.binary(max_size=4096))
def test_random_bytes_are_never_an_artifact(noise: bytes) -> None:
    with pytest.raises(InvalidDataError):
        read_everything(noise)


@given(noise=st.binary(max_size=2048), cut=st.integers(0, 3000))
def test_noise_after_a_valid_header_is_refused(
    artifacts: dict[str, tuple[bytes, dict[str, str]]], noise: bytes, cut: int
) -> None:
    """A real tar prefix (marker member and part of the manifest) followed by garbage."""
    original, _ = artifacts["image"]
    with pytest.raises(InvalidDataError):
        read_everything(original[: 512 + len(MARKER) + cut] + noise)


def _payload(size: int, compressed_size: int) -> Payload:
    """Signed bounds with digests no noise will match (sha256 of a string nobody feeds)."""
    digest = hashlib.sha256(b"the vendor's real payload").hexdigest()
    return Payload(
        name="p",
        type="rootfs-image",
        size=size,
        sha256=digest,
        compressed_size=compressed_size,
        compressed_sha256=digest,
    )


def _chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        yield data[start:cut]
        start = cut
    yield data[start:]


@given(
    noise=st.binary(max_size=8192),
    size=st.integers(0, 2**40),
    compressed_size=st.integers(0, 2**40),
    cuts=st.lists(st.integers(min_value=0), max_size=6),
)
def test_the_decoder_on_noise_raises_only_invalid_data(
    noise: bytes, size: int, compressed_size: int, cuts: list[int]
) -> None:
    """Whatever the signed bounds say, noise fed in any chunking is refused cleanly."""
    decoder = PayloadDecoder(_payload(size, compressed_size))
    with pytest.raises(InvalidDataError):
        for chunk in _chunks(noise, cuts):
            for piece in decoder.decode(chunk):
                assert len(piece) <= MAX_PIECE
        decoder.finish()


@given(
    content=st.binary(max_size=64 * 1024),
    zeros=st.integers(0, 3 * 1024 * 1024),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    flip=st.none() | st.tuples(st.integers(min_value=0), st.integers(1, 255)),
)
def test_the_decoder_reproduces_valid_frames_in_any_chunking(
    content: bytes, zeros: int, cuts: list[int], flip: tuple[int, int] | None
) -> None:
    """Valid frames in any chunking give back the content, with resume points on frame
    boundaries; one flipped byte anywhere is refused."""
    content = content + bytes(zeros)
    packed_io = io.BytesIO()
    size, sha, csize, csha = compress_payload(io.BytesIO(content), packed_io, level=1)
    packed = bytearray(packed_io.getvalue())
    if flip is not None:
        packed[flip[0] % len(packed)] ^= flip[1]
    decoder = PayloadDecoder(
        Payload(
            name="p",
            type="rootfs-image",
            size=size,
            sha256=sha,
            compressed_size=csize,
            compressed_sha256=csha,
        )
    )
    out = hashlib.sha256()
    try:
        for chunk in _chunks(bytes(packed), cuts):
            for piece in decoder.decode(chunk):
                assert len(piece) <= MAX_PIECE
                out.update(piece)
            assert decoder.frame_offset <= decoder.compressed
            assert decoder.frame_output <= decoder.output
        decoder.finish()
    except InvalidDataError:
        assert flip is not None, "valid frames were refused"
        return
    assert flip is None, "a flipped byte was accepted"
    assert out.hexdigest() == sha


def test_a_zstd_bomb_is_decoded_in_bounded_memory(tmp_path: Path) -> None:
    """A signed 64 MiB image of zeros is a 6 KiB artifact (1 MiB frames of ~40 bytes):
    one 64 KiB network chunk holds over a thousand frames. Decoding it must not hold
    them in memory at once (it did: the decoder returned everything one feed produced,
    hundreds of MiB for a 256 MiB image)."""
    image = tmp_path / "zeros"
    image.write_bytes(bytes(64 * 1024 * 1024))
    build_artifact(
        tmp_path / "zeros.fca",
        name="zeros",
        version="1.0.0",
        compatible=["acme-gw"],
        payloads=[PayloadSource("rootfs", "rootfs-image", image, {})],
        key=_KEY,
    )
    data = (tmp_path / "zeros.fca").read_bytes()
    assert len(data) < 64 * 1024
    tracemalloc.start()
    try:
        digests = read_everything(data, chunk=64 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digests == {"rootfs": hashlib.sha256(bytes(64 * 1024 * 1024)).hexdigest()}
    assert peak < 4 * 1024 * 1024, f"decoding peaked at {peak / 2**20:.1f} MiB"
