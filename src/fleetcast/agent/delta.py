"""The device side of a delta update: is the offered delta usable, and applying it.

Workflow, inside the runner's download step (``runner.Agent._download``):

1. :func:`usable_delta` decides *before any download* whether the offer's
   delta may be tried: this agent knows its engine, the running slot holds
   the delta's ``source_version`` of the same artifact name, the sha256
   recorded for that slot (if any) is the delta's source, and the delta is
   smaller than the image's signed ``compressed_size`` (it must never cost more).
2. :func:`install_delta` hashes the first ``source_size`` bytes of the
   running slot (a slot mounted read-write may have changed since it was
   installed; a factory image has no recorded hash), then streams the delta
   into the inactive slot with :func:`fleetcast.delta.apply_delta`: at most
   ``delta.size`` bytes are read, memory is bounded per segment
   (:class:`~fleetcast.delta.DeltaLimits`), and the rebuilt image must have
   the ``size`` and ``sha256`` of the *signed manifest* and the delta file
   the offered sha256.
3. Any :class:`~fleetcast.exceptions.DeltaError` (or integrity error) means
   the delta is abandoned (journaled) and the full artifact is installed,
   as if no delta had been offered. The trial boot is armed only after one
   of the two paths produced a verified image.

A delta is not resumed after an interruption: it starts over (it is small),
and the full download keeps its frame-level resume.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from fleetcast.agent.install import ByteSource, InstallProgress
from fleetcast.agent.slots import SlotContent, SlotWriter
from fleetcast.core.wire import DeltaOffer, UpdateOffer
from fleetcast.delta import DeltaLimits, ImageRef, apply_delta, available_engines, hash_image
from fleetcast.exceptions import DeltaError, DeviceStateError

#: Memory bounds of a delta on this device: one segment of the new image and
#: one window of the old one (plus a patch) at a time; see docs/delta.md.
DEFAULT_LIMITS = DeltaLimits(engines=available_engines())


def usable_delta(offer: UpdateOffer, running: SlotContent | None) -> DeltaOffer | None:
    """The offer's delta if this device may try it, else None (the reason is not an error)."""
    delta = offer.delta
    manifest = offer.manifest.manifest
    if delta is None or running is None or manifest.payload_type != "rootfs-image":
        return None
    if delta.engine not in DEFAULT_LIMITS.engines:
        return None
    if running.name != manifest.name or running.version != delta.source_version:
        return None
    if running.sha256 is not None and (
        running.sha256 != delta.source_sha256 or running.size != delta.source_size
    ):
        return None
    # A delta must never cost more than the image it replaces.
    if delta.size >= manifest.payloads[0].compressed_size:
        return None
    return delta


class _Limited:
    """At most ``limit`` bytes of a stream, hashed on the way."""

    def __init__(self, read: Callable[[int], bytes], limit: int) -> None:
        self._read = read
        self.remaining = limit
        self.digest = hashlib.sha256()

    def read(self, n: int) -> bytes:
        if self.remaining <= 0:
            return b""
        data = self._read(min(n, self.remaining))
        self.remaining -= len(data)
        self.digest.update(data)
        return data


def install_delta(
    offer: UpdateOffer,
    delta: DeltaOffer,
    *,
    source_slot: Path,
    target_slot: Path,
    source: ByteSource,
    limits: DeltaLimits = DEFAULT_LIMITS,
    progress: Callable[[InstallProgress], None] | None = None,
) -> None:
    """Rebuild the offer's image in ``target_slot`` from ``source_slot`` and the delta.

    Raises:
        DeltaError: the running slot is not the delta's source, or the delta
            is malformed, over a bound, truncated, or rebuilds anything but
            the signed image: install the full artifact instead.
        TransportError: the download broke off (try again later).
        DeviceStateError: a slot cannot be read or written.
    """
    payload = offer.manifest.manifest.payloads[0]
    try:
        actual = hash_image(source_slot, delta.source_size)
    except OSError as e:
        raise DeviceStateError(f"cannot read the running slot {source_slot}: {e}") from e
    if actual != delta.source_sha256:
        raise DeltaError(
            f"the running slot is not the image the delta starts from "
            f"({actual[:12]}, delta needs {delta.source_sha256[:12]})"
        )
    stream = source.open(0)
    try:
        limited = _Limited(stream.read, delta.size)
        with SlotWriter(target_slot, offset=0, max_size=payload.size) as slot:

            def written(n: int) -> None:
                if progress is not None:
                    progress(InstallProgress(n, payload.size))

            try:
                apply_delta(
                    limited.read,
                    source_slot,
                    slot.write,
                    source=ImageRef(delta.source_size, delta.source_sha256),
                    target=ImageRef(payload.size, payload.sha256),
                    limits=limits,
                    max_size=delta.size,
                    # A format 2 delta reads back what it wrote: SlotWriter.write
                    # is unbuffered, so a pread of the slot sees it.
                    written_path=target_slot,
                    progress=written,
                )
            except OSError as e:
                raise DeviceStateError(
                    f"cannot read slot {source_slot} or {target_slot}: {e}"
                ) from e
            if limited.remaining or limited.digest.hexdigest() != delta.sha256:
                raise DeltaError("the delta file differs from the offered one")
            slot.finish(payload.size)
    finally:
        stream.close()


__all__ = ["DEFAULT_LIMITS", "install_delta", "usable_delta"]
