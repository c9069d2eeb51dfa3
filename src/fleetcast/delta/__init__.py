"""Delta updates: rebuild a new image from the installed one and a small delta file.

Workflow:

1. The server calls :func:`generate_delta` on the full content of two
   artifacts' ``rootfs-image`` payloads (old -> new), with the engine from
   :class:`DeltaParams`: ``hdiffpatch`` (smallest) or ``zstd`` (fastest).
2. The device checks that its active slot holds the delta's source
   (:func:`hash_image`), then streams the delta through :func:`apply_delta`
   into the inactive slot: segment by segment, in memory bounded by
   :class:`DeltaLimits`, and compares the result with the signed manifest.
3. Any :class:`~fleetcast.exceptions.DeltaError` means: discard, install the
   full artifact.

The file format is described in ``fleetcast.delta._format`` and
``docs/adr/0005-delta-updates.md``.
"""

from __future__ import annotations

from fleetcast.delta._apply import apply_delta, hash_image
from fleetcast.delta._engines import EngineOptions, available_engines
from fleetcast.delta._format import ENGINES, DeltaHeader, DeltaLimits, ImageRef, parse_header
from fleetcast.delta._generate import DeltaParams, generate_delta

__all__ = [
    "ENGINES",
    "DeltaHeader",
    "DeltaLimits",
    "DeltaParams",
    "EngineOptions",
    "ImageRef",
    "apply_delta",
    "available_engines",
    "generate_delta",
    "hash_image",
    "parse_header",
]
