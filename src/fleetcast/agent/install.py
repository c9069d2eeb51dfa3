"""The streaming installer: artifact bytes in, verified slot content out.

Workflow for one update (the runner journals every step):

1. :meth:`Installer.verify_offer`: check the offer's signed manifest against
   the trusted vendor keys and its compatibility with this device (device
   type, ``depends``, downgrade rule) *before any slot is touched*.
2. :meth:`Installer.install`: open the artifact through a :class:`ByteSource`
   (HTTP with ``Range``/``If-Range``, or a local file), read it with
   :class:`~fleetcast.artifact.ArtifactReader` (the embedded manifest must be
   byte-identical to the offered one), and feed the payload through a
   :class:`~fleetcast.artifact.PayloadDecoder` into the target (the inactive
   slot). Nothing is buffered beyond one chunk; every length is bounded by the
   signed manifest.
3. Every ``checkpoint_interval`` bytes, at a zstd frame boundary, the slot is
   fsynced and *then* the resume point is handed to the ``checkpoint``
   callback (which journals it). A resume point therefore never claims bytes
   that are not on disk.
4. On resume, the first ``output`` bytes are read back from the slot to
   rebuild the content hash, and the download continues at
   ``data_offset + compressed`` (``Range: bytes=N-``). If the source cannot
   resume (the artifact changed, so ``If-Range`` failed), it starts over.
5. ``PayloadDecoder.finish()`` checks the total length and sha256 against the
   signed manifest. Only then does :meth:`install` return; only then may the
   runner arm the trial boot.

This version installs artifacts with one payload: a ``rootfs-image``
(written to the inactive slot), or a ``files`` / ``script`` payload (staged
to a file under the state directory; see :mod:`fleetcast.agent.payloads`).
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleetcast.agent.config import AgentLimits
from fleetcast.agent.journal import ResumePoint
from fleetcast.agent.slots import SlotContent, SlotWriter, read_slot_prefix
from fleetcast.artifact import ArtifactReader, PayloadDecoder
from fleetcast.core.manifest import Manifest, Payload
from fleetcast.core.versions import Version
from fleetcast.core.wire import UpdateOffer
from fleetcast.exceptions import (
    ArtifactFormatError,
    DeviceStateError,
    IncompatibleError,
    IntegrityError,
    UsageError,
)

SUPPORTED_PAYLOAD_TYPES: Final = ("rootfs-image",)


class ByteStream(Protocol):
    """An open artifact download: bytes from ``offset`` on."""

    @property
    def offset(self) -> int:
        """Where this stream really starts (0 if the source could not resume)."""
        ...

    @property
    def validator(self) -> str | None:
        """An opaque version tag of the artifact (HTTP ETag), for ``If-Range``."""
        ...

    def read(self, n: int) -> bytes:
        """Read up to ``n`` bytes; ``b""`` at the end.

        Raises:
            TransportError: the connection failed (the caller resumes later).
        """
        ...

    def close(self) -> None: ...


class ByteSource(Protocol):
    """Where an artifact's bytes come from."""

    def open(self, offset: int, *, validator: str | None = None) -> ByteStream:
        """Open the artifact at ``offset``.

        Args:
            offset: the first byte wanted.
            validator: the tag seen when the download began; if the artifact
                no longer matches it, the source serves from 0 instead.

        Raises:
            TransportError: the source cannot be reached.
        """
        ...


class FileByteStream:
    """A :class:`ByteStream` over a local file."""

    def __init__(self, path: Path, offset: int) -> None:
        self._fh = path.open("rb")
        self._fh.seek(offset)
        self._offset = offset

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def validator(self) -> str | None:
        return None

    def read(self, n: int) -> bytes:
        return self._fh.read(n)

    def close(self) -> None:
        self._fh.close()


class FileByteSource:
    """A :class:`ByteSource` over a local artifact file (tests, CLI, USB stick).

    Raises:
        UsageError: on :meth:`open`, the file does not exist.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self, offset: int, *, validator: str | None = None) -> FileByteStream:
        """Open the file at ``offset`` (``validator`` is ignored: files do not change)."""
        try:
            return FileByteStream(self.path, offset)
        except FileNotFoundError as e:
            raise UsageError(f"artifact file not found: {self.path}") from e


class _Limited:
    """At most ``limit`` bytes of a stream: an artifact is never read past its offered size."""

    def __init__(self, stream: ByteStream, limit: int) -> None:
        self._stream = stream
        self._remaining = limit

    def read(self, n: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        want = self._remaining if n is None or n < 0 else min(n, self._remaining)
        data = self._stream.read(want)
        self._remaining -= len(data)
        return data


@dataclass(frozen=True)
class InstallProgress:
    """How far an install is: content bytes written of the signed total."""

    written: int
    total: int

    @property
    def percent(self) -> int:
        return 100 if self.total == 0 else min(100, self.written * 100 // self.total)


class Installer:
    """Verifies offers and streams their payload into a target.

    Args:
        device_type: this device's type (must be in the manifest's ``compatible``).
        trusted_keys: vendor public keys; one of them must have signed the manifest.
        limits: chunk and checkpoint sizes.
        checkpoint: called with each new resume point, after the target is synced.
        progress: called after every chunk with the bytes written so far.
    """

    def __init__(
        self,
        *,
        device_type: str,
        trusted_keys: list[Ed25519PublicKey],
        limits: AgentLimits,
        checkpoint: Callable[[ResumePoint], None],
        progress: Callable[[InstallProgress], None] | None = None,
    ) -> None:
        self.device_type = device_type
        self.trusted_keys = trusted_keys
        self.limits = limits
        self._checkpoint = checkpoint
        self._progress = progress

    def verify_signature(self, offer: UpdateOffer) -> Manifest:
        """Check the offer's manifest is signed by a trusted vendor key; return it.

        Raises:
            SignatureError: unsigned, untrusted key or invalid signature.
        """
        offer.manifest.verify(self.trusted_keys)
        return offer.manifest.manifest

    def check_offer(self, offer: UpdateOffer, installed: SlotContent | None) -> None:
        """Check the (signature-verified) offer fits this device.

        Raises:
            IncompatibleError: wrong device type, unmet ``depends``, an
                unsupported payload type, or a size the signed manifest cannot explain.
            DowngradeError: older than installed and downgrades not allowed.
        """
        manifest = offer.manifest.manifest
        manifest.check_compatible(
            device_type=self.device_type,
            installed_version=installed.version if installed else None,
            allow_downgrade=offer.allow_downgrade,
        )
        if len(manifest.payloads) != 1:
            raise IncompatibleError(
                f"artifact {manifest.name} {manifest.version} has {len(manifest.payloads)} "
                "payloads; this agent installs single-payload artifacts"
            )
        if manifest.payload_type not in SUPPORTED_PAYLOAD_TYPES:
            raise IncompatibleError(f"payload type {manifest.payload_type!r} is not supported")
        if offer.artifact_size < manifest.payloads[0].compressed_size:
            raise IncompatibleError(
                f"artifact {manifest.name} {manifest.version}: offered size "
                f"{offer.artifact_size} is smaller than its signed payload"
            )

    def verify_offer(self, offer: UpdateOffer, installed: SlotContent | None) -> Manifest:
        """:meth:`verify_signature`, then :meth:`check_offer`; return the trusted manifest.

        Raises:
            SignatureError: unsigned, untrusted key or invalid signature.
            IncompatibleError: the artifact does not fit this device.
            DowngradeError: older than installed and downgrades not allowed.
        """
        manifest = self.verify_signature(offer)
        self.check_offer(offer, installed)
        return manifest

    @staticmethod
    def is_same_version(manifest: Manifest, installed: SlotContent | None) -> bool:
        """Whether the running slot already holds this artifact (name and version)."""
        return (
            installed is not None
            and installed.name == manifest.name
            and Version.parse(installed.version) == manifest.semver
        )

    def install(
        self,
        offer: UpdateOffer,
        target: Path,
        source: ByteSource,
        *,
        resume: ResumePoint | None = None,
    ) -> None:
        """Stream the offer's payload into ``target`` and verify it completely.

        Call :meth:`verify_offer` first; this method trusts ``offer.manifest``.

        Raises:
            IntegrityError: the payload's length or hash differs from the
                signed manifest, or the artifact embeds another manifest.
            ArtifactFormatError: the artifact is malformed or truncated.
            TransportError: the download broke off (resume from the last checkpoint).
            DeviceStateError: the target cannot be written or read back.
        """
        payload = offer.manifest.manifest.payloads[0]
        if resume is not None and resume.output > 0:
            stream = source.open(resume.data_offset + resume.compressed, validator=resume.validator)
            if stream.offset == resume.data_offset + resume.compressed:
                self._resume(offer, payload, target, stream, resume)
                return
            if stream.offset != 0:
                stream.close()
                raise ArtifactFormatError(
                    f"source resumed at {stream.offset}, asked for "
                    f"{resume.data_offset + resume.compressed}"
                )
            # The source could not resume (artifact changed): start over on this stream.
        else:
            stream = source.open(0)
        self._fresh(offer, target, stream)

    def _fresh(self, offer: UpdateOffer, target: Path, stream: ByteStream) -> None:
        try:
            reader = ArtifactReader(_Limited(stream, offer.artifact_size))  # type: ignore[arg-type]
            embedded = reader.read_manifest()
            if embedded.signed_bytes != offer.manifest.signed_bytes:
                raise IntegrityError(
                    f"artifact {offer.artifact_id}: its manifest differs from the offered one"
                )
            for entry, member in reader.payloads():
                decoder = PayloadDecoder(entry.payload)
                with SlotWriter(target, offset=0, max_size=entry.payload.size) as slot:
                    self._pump(member.read, decoder, slot, entry.data_offset, stream.validator)
                    decoder.finish()
                    slot.finish(entry.payload.size)
        finally:
            stream.close()

    def _resume(
        self,
        offer: UpdateOffer,
        payload: Payload,
        target: Path,
        stream: ByteStream,
        resume: ResumePoint,
    ) -> None:
        try:
            decoder = PayloadDecoder(
                payload, start_compressed=resume.compressed, start_output=resume.output
            )
            for chunk in read_slot_prefix(target, resume.output, chunk=self.limits.download_chunk):
                decoder.rehash_output(chunk)
            limited = _Limited(stream, payload.compressed_size - resume.compressed)
            with SlotWriter(target, offset=resume.output, max_size=payload.size) as slot:
                self._pump(limited.read, decoder, slot, resume.data_offset, stream.validator)
                decoder.finish()
                slot.finish(payload.size)
        finally:
            stream.close()

    def _pump(
        self,
        read: Callable[[int], bytes],
        decoder: PayloadDecoder,
        slot: SlotWriter,
        data_offset: int,
        validator: str | None,
    ) -> None:
        last_checkpoint = decoder.frame_output
        total = decoder.payload.size
        while True:
            try:
                data = read(self.limits.download_chunk)
            except (tarfile.TarError, EOFError) as e:
                raise ArtifactFormatError(
                    f"payload {decoder.payload.name}: artifact is truncated"
                ) from e
            except OSError as e:
                raise DeviceStateError(f"reading the artifact failed: {e}") from e
            if not data:
                return
            slot.write(decoder.feed(data))
            if decoder.frame_output - last_checkpoint >= self.limits.checkpoint_interval:
                slot.sync()  # the bytes first, then the journal that points past them
                self._checkpoint(
                    ResumePoint(data_offset, decoder.frame_offset, decoder.frame_output, validator)
                )
                last_checkpoint = decoder.frame_output
            if self._progress is not None:
                self._progress(InstallProgress(decoder.output, total))


__all__ = [
    "SUPPORTED_PAYLOAD_TYPES",
    "ByteSource",
    "ByteStream",
    "FileByteSource",
    "FileByteStream",
    "InstallProgress",
    "Installer",
]
