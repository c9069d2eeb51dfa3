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

import typing as _typing

from fleetcast._lazy import lazy_exports as _lazy_exports

if _typing.TYPE_CHECKING:
    from fleetcast.delta._apply import apply_delta, hash_image
    from fleetcast.delta._capability import available_engines
    from fleetcast.delta._engines import EngineOptions
    from fleetcast.delta._format import ENGINES, DeltaHeader, DeltaLimits, ImageRef, parse_header
    from fleetcast.delta._generate import DeltaParams, generate_delta

# Public name -> private module, imported on first use (PEP 562): the agent
# asks for ``available_engines`` in every inventory and must not load pyzstd
# and the patch machinery for that while idle.
_EXPORTS: dict[str, str] = {
    "apply_delta": "_apply",
    "hash_image": "_apply",
    "available_engines": "_capability",
    "EngineOptions": "_engines",
    "ENGINES": "_format",
    "DeltaHeader": "_format",
    "DeltaLimits": "_format",
    "ImageRef": "_format",
    "parse_header": "_format",
    "DeltaParams": "_generate",
    "generate_delta": "_generate",
}


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

__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS, __all__)
