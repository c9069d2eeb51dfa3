"""What the offline tooling, the server and the agent agree on about TUF (ADR 0008).

Names only: role names, the hash-bin layout, the target path of an artifact and
the shape of the ``custom`` field Fleetcast signs into each target. Building and
verifying metadata is python-tuf's job (``tuf.api.metadata``, ``tuf.ngclient``).
This package imports nothing of the server, the agent or the CLI.
"""

from __future__ import annotations

from typing import Final

IMAGE_REPO: Final = "image"
DIRECTOR_REPO: Final = "director"
REPOS: Final = (IMAGE_REPO, DIRECTOR_REPO)

#: Roles whose keys the server holds (online) and signs with.
ONLINE_ROLES: Final = ("snapshot", "timestamp", "director")

#: Succinct hash-bin delegation from the image ``targets`` role.
BINS_PREFIX: Final = "bins"
DEFAULT_BIN_BITS: Final = 8

SPEC_VERSION: Final = "1.0.31"

#: Key of Fleetcast's object inside a target's ``custom``.
CUSTOM_KEY: Final = "fleetcast"
#: Extra field in the signed part of director ``targets`` metadata.
DIRECTOR_FIELD: Final = "x-fleetcast"

#: How long each kind of metadata is valid when signed (seconds).
ROOT_LIFETIME: Final = 365 * 86400
TARGETS_LIFETIME: Final = 365 * 86400
SNAPSHOT_LIFETIME: Final = 7 * 86400
TIMESTAMP_LIFETIME: Final = 86400
DIRECTOR_LIFETIME: Final = 86400


def target_path(name: str, version: str) -> str:
    """The image-repository target path of artifact ``name`` ``version``.

    Both are restricted to ``[A-Za-z0-9._+-]`` by the manifest rules, so the
    path needs no escaping and has exactly one ``/``.
    """
    return f"{name}/{version}.fca"


__all__ = [
    "BINS_PREFIX",
    "CUSTOM_KEY",
    "DEFAULT_BIN_BITS",
    "DIRECTOR_FIELD",
    "DIRECTOR_LIFETIME",
    "DIRECTOR_REPO",
    "IMAGE_REPO",
    "ONLINE_ROLES",
    "REPOS",
    "ROOT_LIFETIME",
    "SNAPSHOT_LIFETIME",
    "SPEC_VERSION",
    "TARGETS_LIFETIME",
    "TIMESTAMP_LIFETIME",
    "target_path",
]
