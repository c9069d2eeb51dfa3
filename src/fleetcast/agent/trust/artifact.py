"""The whole artifact, bounded by its TUF target length and checked against its sha256.

The installer verifies every *payload* against the signed manifest (whose
hash TUF pins through ``custom.fleetcast.manifest_sha256``), but reads the
artifact file only as far as its payloads go. In TUF mode the agent also
holds the artifact *file* to its target (ADR 0008): :class:`CheckedArtifactSource`
wraps the download, hashes every byte the installer reads, refuses a byte
past the target length, and :meth:`CheckedArtifactSource.finish` reads what
the installer left (tar padding), requires the stream to end exactly at the
length, and compares the sha256. The runner calls it after the install and
before the slot is recorded as installed, so a mismatch fails the update
before the trial boot is armed.

Resuming after a power cut: a sha256 state cannot be journaled, so when the
installer resumes at offset N the source first reads bytes ``0..N`` again
(one bounded GET, discarded after hashing) and then continues at N. A resumed
download therefore costs up to one extra download of the part already
installed; the slot's content itself is not re-written. If the server cannot
resume (the installer then starts over from 0), hashing starts over too.

Deltas (ADR 0005) bypass the artifact file: the rebuilt image is checked
against the manifest's payload size and sha256, and the manifest is the one
TUF pins, so the chain of trust is unbroken without the file hash.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from fleetcast.exceptions import IntegrityError

if TYPE_CHECKING:
    from fleetcast.agent.install import ByteSource, ByteStream


class CheckedArtifactSource:
    """A ``ByteSource`` that bounds and hashes the whole artifact.

    Args:
        inner: the real source (HTTP, resumable).
        length: the artifact's TUF target length.
        sha256: the artifact's TUF target sha256.
        chunk: bytes per read when finishing or re-reading a prefix.
    """

    def __init__(self, inner: ByteSource, *, length: int, sha256: str, chunk: int) -> None:
        self._inner = inner
        self._length = length
        self._sha256 = sha256
        self._chunk = chunk
        self._hash = hashlib.sha256()
        self._count = 0
        self._stream: _CheckedStream | None = None

    def open(self, offset: int, *, validator: str | None = None) -> ByteStream:
        """Open the artifact at ``offset`` (re-reading ``0..offset`` first to hash it).

        Raises:
            TransportError: the source cannot be reached.
            IntegrityError: the artifact is shorter than ``offset`` or longer
                than its target length.
        """
        self.close()
        self._hash, self._count = hashlib.sha256(), 0
        if offset > 0:
            self._hash_prefix(offset)
        stream = self._inner.open(offset, validator=validator)
        if stream.offset != offset:
            # The source could not resume and serves from 0: so do we.
            self._hash, self._count = hashlib.sha256(), 0
        self._stream = _CheckedStream(stream, self)
        return self._stream

    def _hash_prefix(self, offset: int) -> None:
        stream = self._inner.open(0)
        try:
            while self._count < offset:
                data = stream.read(min(self._chunk, offset - self._count))
                if not data:
                    raise IntegrityError(
                        f"the artifact ends after {self._count} bytes, before the "
                        f"resume point at {offset}"
                    )
                self.update(data)
        finally:
            stream.close()

    def update(self, data: bytes) -> None:
        """Count and hash bytes read from the artifact.

        Raises:
            IntegrityError: more bytes than the target length (endless data).
        """
        self._count += len(data)
        if self._count > self._length:
            raise IntegrityError(
                f"the server sends more than the artifact's signed length ({self._length} bytes)"
            )
        self._hash.update(data)

    def finish(self) -> None:
        """Read the rest of the artifact and check its length and sha256.

        Raises:
            IntegrityError: shorter or longer than the target, or another sha256.
            TransportError: the download broke off.
        """
        if self._stream is None:
            raise IntegrityError("the artifact was never read")
        inner = self._stream.inner
        while self._count < self._length:
            data = inner.read(min(self._chunk, self._length - self._count))
            if not data:
                raise IntegrityError(
                    f"the artifact ends after {self._count} of its signed {self._length} bytes"
                )
            self.update(data)
        if inner.read(1):
            raise IntegrityError(
                f"the server sends more than the artifact's signed length ({self._length} bytes)"
            )
        digest = self._hash.hexdigest()
        if digest != self._sha256:
            raise IntegrityError(
                f"the artifact's sha256 is {digest}, its TUF target says {self._sha256}"
            )

    def close(self) -> None:
        """Close the open download, if any."""
        if self._stream is not None:
            self._stream.inner.close()
            self._stream = None


class _CheckedStream:
    """The installer's view: reads are counted and hashed; ``close`` is the source's job."""

    def __init__(self, inner: ByteStream, owner: CheckedArtifactSource) -> None:
        self.inner = inner
        self._owner = owner

    @property
    def offset(self) -> int:
        return self.inner.offset

    @property
    def validator(self) -> str | None:
        return self.inner.validator

    def read(self, n: int) -> bytes:
        data = self.inner.read(n)
        self._owner.update(data)
        return data

    def close(self) -> None:
        # Kept open: finish() reads what the installer left on the same connection.
        pass


__all__ = ["CheckedArtifactSource"]
