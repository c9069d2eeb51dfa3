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

Encrypted payloads (ADR 0008): :meth:`Installer.check_offer` finds the
content key (:func:`fleetcast.agent.decryption.content_key_for`) before
anything is downloaded, so a device without a key reports "no key to
decrypt payload X" and stays as it is. The decoder checks every chunk's tag
before its plaintext is decompressed, and the signed ``size``/``sha256`` of
the plaintext as before. Resume points stay zstd frame boundaries in the
decrypted stream; a resumed download restarts at the start of the encrypted
chunk that holds the boundary (at most ``chunk_size`` bytes, <= 1 MiB, read again).

An artifact of ``files`` and ``script`` payloads is installed in place, not
into a slot: :meth:`Installer.stage` streams every payload through a
:class:`PayloadContent` (bounded and hashed as it is read) into its staging
area (:mod:`fleetcast.agent.payloads`) and calls ``PayloadDecoder.finish()``
on each, so nothing is switched before every payload is verified.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fleetcast.agent.config import AgentLimits
from fleetcast.agent.decryption import content_key_for
from fleetcast.agent.journal import ResumePoint
from fleetcast.agent.payloads import InPlacePlan
from fleetcast.agent.slots import SlotContent, SlotWriter, read_slot_prefix
from fleetcast.artifact import ArtifactReader, PayloadDecoder, resume_offset
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

SUPPORTED_PAYLOAD_TYPES: Final = ("rootfs-image", "files", "script", "module")


def is_in_place(manifest: Manifest) -> bool:
    """Whether the artifact is installed into the running system (no ``rootfs-image``)."""
    return all(p.type != "rootfs-image" for p in manifest.payloads)


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


class PayloadContent:
    """One payload's content as a file-like stream, decoded and hashed as it is read.

    Every byte read passes through the :class:`PayloadDecoder` (bounded by the
    signed sizes); the caller must still :meth:`drain` it and call
    ``decoder.finish()`` before trusting what it wrote.
    """

    def __init__(
        self, read: Callable[[int], bytes], decoder: PayloadDecoder, *, chunk: int
    ) -> None:
        self._read = read
        self._decoder = decoder
        self._chunk = chunk
        self._buffer = bytearray()
        self._pending: Iterator[bytes] = iter(())
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        """Return up to ``n`` content bytes (all that is left if ``n < 0``); ``b""`` at the end.

        Raises:
            ArtifactFormatError: the artifact is truncated or the zstd data corrupt.
            IntegrityError: more data than the signed manifest allows.
            TransportError: the download broke off.
            DeviceStateError: reading the artifact failed locally.
        """
        while n < 0 or len(self._buffer) < n:
            # Decode piece by piece: one compressed chunk may expand to gigabytes.
            piece = next(self._pending, None)
            if piece is not None:
                self._buffer += piece
                continue
            if self._eof:
                break
            try:
                data = self._read(self._chunk)
            except (tarfile.TarError, EOFError) as e:
                raise ArtifactFormatError(
                    f"payload {self._decoder.payload.name}: artifact is truncated"
                ) from e
            except OSError as e:
                raise DeviceStateError(f"reading the artifact failed: {e}") from e
            if not data:
                self._eof = True
            else:
                self._pending = self._decoder.decode(data)
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    def drain(self) -> None:
        """Read (and so hash) whatever the consumer left, e.g. a tar archive's padding."""
        while self.read(self._chunk):
            pass


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
        files_roots: directories ``files`` payloads may install into (empty: any).
        state_dir: where ``script`` payloads are written before they run.
        decryption_keys: this device's X25519 keys (its own, then group keys),
            for encrypted payloads.
    """

    def __init__(
        self,
        *,
        device_type: str,
        trusted_keys: list[Ed25519PublicKey],
        limits: AgentLimits,
        checkpoint: Callable[[ResumePoint], None],
        progress: Callable[[InstallProgress], None] | None = None,
        files_roots: Sequence[Path] = (),
        state_dir: Path | None = None,
        decryption_keys: Sequence[X25519PrivateKey] = (),
    ) -> None:
        self.device_type = device_type
        self.decryption_keys = tuple(decryption_keys)
        self.files_roots = tuple(files_roots)
        self.state_dir = state_dir
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

        Args:
            offer: the offer.
            installed: the installed artifact *of the same name* (``None`` if
                that name was never installed; then a ``depends`` on version
                fails). Content of another name counts as ``None``.

        Raises:
            IncompatibleError: wrong device type, unmet ``depends``, an
                unsupported payload type, a ``files`` destination outside
                ``files_roots``, a size the signed manifest cannot explain,
                or an encrypted payload this device has no key for.
            IntegrityError: a content key wrapped for this device is tampered.
            ValidationError: a ``files`` payload without a usable ``dest``.
            DowngradeError: older than installed and downgrades not allowed.
        """
        manifest = offer.manifest.manifest
        same_name = installed is not None and installed.name == manifest.name
        manifest.check_compatible(
            device_type=self.device_type,
            installed_version=installed.version if installed is not None and same_name else None,
            allow_downgrade=offer.allow_downgrade,
        )
        for payload in manifest.payloads:
            if payload.type not in SUPPORTED_PAYLOAD_TYPES:
                raise IncompatibleError(f"payload type {payload.type!r} is not supported")
        if is_in_place(manifest):
            self.plan(manifest)  # every dest is checked before anything is downloaded
        if offer.artifact_size < sum(p.compressed_size for p in manifest.payloads):
            raise IncompatibleError(
                f"artifact {manifest.name} {manifest.version}: offered size "
                f"{offer.artifact_size} is smaller than its signed payloads"
            )
        self.content_key(offer)

    def content_key(self, offer: UpdateOffer) -> bytes | None:
        """The offer's content key (None: nothing is encrypted).

        Raises:
            IncompatibleError: no key of this device can unwrap it.
            IntegrityError: a wrapped key for this device is tampered or wrong.
        """
        return content_key_for(offer.manifest.manifest, offer.wrapped_key, self.decryption_keys)

    def plan(self, manifest: Manifest) -> InPlacePlan:
        """Where the payloads of an in-place artifact go.

        Raises:
            ValidationError: a ``files`` payload without a usable ``dest``, or overlapping ones.
            IncompatibleError: a ``dest`` outside ``files_roots``.
            UsageError: the installer was built without a ``state_dir``.
        """
        if self.state_dir is None:
            raise UsageError("an Installer for in-place artifacts needs a state_dir")
        return InPlacePlan.of(manifest, state_dir=self.state_dir, roots=self.files_roots)

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
        key = self.content_key(offer)
        if resume is not None and resume.output > 0:
            # An encrypted member resumes at the start of the chunk holding the frame boundary.
            at = resume.data_offset + resume_offset(payload, resume.compressed)
            stream = source.open(at, validator=resume.validator)
            if stream.offset == at:
                self._resume(payload, target, stream, resume, key)
                return
            if stream.offset != 0:
                stream.close()
                raise ArtifactFormatError(f"source resumed at {stream.offset}, asked for {at}")
            # The source could not resume (artifact changed): start over on this stream.
        else:
            stream = source.open(0)
        self._fresh(offer, target, stream, key)

    def stage(self, offer: UpdateOffer, source: ByteSource, plan: InPlacePlan) -> None:
        """Stream every payload of an in-place artifact into its staging area, verified.

        Each payload's content goes through ``plan.stage`` and is then checked
        with ``PayloadDecoder.finish()`` (length and both hashes). A download
        that breaks off starts over (the caller prepares the plan again).

        Raises:
            IntegrityError: a payload's length or hash differs from the signed manifest.
            ArtifactFormatError: malformed artifact or ``files`` archive.
            TransportError: the download broke off.
            DeviceStateError: the staging area cannot be written.
        """
        key = self.content_key(offer)
        stream = source.open(0)
        try:
            reader = self._reader(offer, stream)
            for entry, member in reader.payloads():
                decoder = PayloadDecoder(entry.payload, content_key=key)
                content = PayloadContent(member.read, decoder, chunk=self.limits.download_chunk)
                plan.stage(entry.payload, content)
                content.drain()
                decoder.finish()
        finally:
            stream.close()

    @staticmethod
    def _reader(offer: UpdateOffer, stream: ByteStream) -> ArtifactReader:
        reader = ArtifactReader(_Limited(stream, offer.artifact_size))  # type: ignore[arg-type]
        embedded = reader.read_manifest()
        if embedded.signed_bytes != offer.manifest.signed_bytes:
            raise IntegrityError(
                f"artifact {offer.artifact_id}: its manifest differs from the offered one"
            )
        return reader

    def _fresh(
        self, offer: UpdateOffer, target: Path, stream: ByteStream, key: bytes | None
    ) -> None:
        try:
            reader = self._reader(offer, stream)
            for entry, member in reader.payloads():
                decoder = PayloadDecoder(entry.payload, content_key=key)
                with SlotWriter(target, offset=0, max_size=entry.payload.size) as slot:
                    self._pump(member.read, decoder, slot, entry.data_offset, stream.validator)
                    decoder.finish()
                    slot.finish(entry.payload.size)
        finally:
            stream.close()

    def _resume(
        self,
        payload: Payload,
        target: Path,
        stream: ByteStream,
        resume: ResumePoint,
        key: bytes | None,
    ) -> None:
        try:
            decoder = PayloadDecoder(
                payload,
                start_compressed=resume.compressed,
                start_output=resume.output,
                content_key=key,
            )
            for chunk in read_slot_prefix(target, resume.output, chunk=self.limits.download_chunk):
                decoder.rehash_output(chunk)
            limited = _Limited(stream, payload.compressed_size - decoder.compressed)
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
            for piece in decoder.decode(data):  # bounded pieces, however well it compressed
                slot.write(piece)
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
    "PayloadContent",
    "is_in_place",
]
