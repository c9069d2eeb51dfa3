"""Device kinds, artifact formats, and which artifact of a deployment each device gets.

Three kinds of devices share one fleet, and each understands one format:

=========  =====================================  ==============================
kind       client                                 artifact format
=========  =====================================  ==============================
native     the Fleetcast agent                    ``fleetcast`` (signed ``.fca``)
ddi        hawkBit DDI clients (SWUpdate, RAUC)   ``file`` (``.swu``, ``.raucb``)
mender     the Mender client                      ``mender`` (``mender-artifact``)
=========  =====================================  ==============================

A deployment names one artifact and optionally alternatives; each targeted
device gets the first of them whose format its kind understands and whose
``compatible`` list holds its device type. A device no artifact fits is
``skipped`` with a message saying why (ADR 0006).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

from fleetcast.server.db.models import Artifact


class DeviceKind(enum.StrEnum):
    """Which protocol a device speaks."""

    NATIVE = "native"
    DDI = "ddi"
    MENDER = "mender"


class ArtifactFormat(enum.StrEnum):
    """What an artifact file is."""

    FLEETCAST = "fleetcast"
    FILE = "file"
    MENDER = "mender"


#: The one format each kind of device installs.
FORMAT_OF_KIND: Final = {
    DeviceKind.NATIVE: ArtifactFormat.FLEETCAST,
    DeviceKind.DDI: ArtifactFormat.FILE,
    DeviceKind.MENDER: ArtifactFormat.MENDER,
}

#: The skip message of a native device when the deployment has a single
#: fleetcast artifact: unchanged since before other formats existed.
NATIVE_TYPE_MISMATCH: Final = "device type not in the artifact's compatible list"


def pick_artifact(
    kind: str, device_type: str, artifacts: Sequence[Artifact]
) -> tuple[Artifact | None, str]:
    """The artifact a device of ``kind`` and ``device_type`` gets, or None and why not.

    ``artifacts`` is the deployment's artifact followed by its alternatives.
    """
    wanted = FORMAT_OF_KIND[DeviceKind(kind)]
    of_format = [a for a in artifacts if a.format == wanted]
    for artifact in of_format:
        if device_type in artifact.compatible:
            return artifact, ""
    if not of_format:
        formats = ", ".join(sorted({a.format for a in artifacts}))
        return None, (
            f"no artifact for a {kind} device: it installs {wanted.value} artifacts, "
            f"the deployment has {formats}"
        )
    if kind == DeviceKind.NATIVE and len(artifacts) == 1:
        return None, NATIVE_TYPE_MISMATCH
    names = ", ".join(f"{a.name} {a.version}" for a in of_format)
    return None, f"device type {device_type!r} is not compatible with {names}"
