"""The one check every external installer makes on an offer before downloading."""

from __future__ import annotations

from fleetcast.core.manifest import Manifest
from fleetcast.exceptions import IncompatibleError


def require_image_format(manifest: Manifest, wanted: str, tool: str) -> None:
    """Refuse an image payload that is not in the installer's own format.

    Raises:
        IncompatibleError: a ``rootfs-image`` payload's ``meta["format"]`` is not ``wanted``.
    """
    for payload in manifest.payloads:
        if payload.type == "rootfs-image" and payload.meta.get("format") != wanted:
            raise IncompatibleError(
                f"payload {payload.name!r}: this device installs with {tool} and needs "
                f"meta format={wanted!r}, got {payload.meta.get('format')!r}"
            )
