"""What the device has installed, by artifact name, and the inventory it reports.

Two records in the state directory, both written atomically:

- ``slots.json`` (:class:`~fleetcast.agent.slots.InstalledArtifacts`): which
  root file system artifact each A/B slot holds. The *running* slot's entry
  is the installed root file system; it is not copied anywhere else,
  because the bootloader can change the running slot behind the agent's
  back (a failed trial falls back).
- ``artifacts.json`` (:class:`InstalledVersions`): ``name -> version`` of the
  artifacts installed in place (``files`` / ``script`` payloads). An entry
  is written only when such an update commits.

:func:`installed_as` answers "which version of *this name* is installed?"
from both: it is what ``Manifest.check_compatible`` gets (``depends``,
downgrades) and what decides "already installed". A name is either a root
file system or an in-place artifact, never both (the runner refuses an
artifact that would mix them).

The inventory keeps ``artifact_name``/``artifact_version`` for the root file
system and reports each in-place artifact as the attribute
``artifact.<name> = <version>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from fleetcast.agent.atomicfile import write_atomic
from fleetcast.agent.slots import SlotContent
from fleetcast.core.wire import Inventory

ARTIFACTS_FILE: Final = "artifacts.json"
ARTIFACTS_FORMAT: Final = 1
ATTRIBUTE_PREFIX: Final = "artifact."


class InstalledVersions:
    """``<state_dir>/artifacts.json``: versions of the artifacts installed in place.

    An unreadable record counts as empty (and :attr:`problem` says why): the
    device keeps working; a ``depends`` on such an artifact then fails until
    it is installed again.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / ARTIFACTS_FILE
        self.problem: str | None = None

    def load(self) -> dict[str, str]:
        """Return ``name -> version`` of every artifact installed in place."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            self.problem = f"installed-artifact record {self.path} is unreadable: {e}"
            return {}
        artifacts = data.get("artifacts") if isinstance(data, dict) else None
        if not isinstance(artifacts, dict):
            self.problem = f"installed-artifact record {self.path} has no 'artifacts' object"
            return {}
        return {k: v for k, v in artifacts.items() if isinstance(k, str) and isinstance(v, str)}

    def set(self, name: str, version: str) -> None:
        """Record that ``name`` is installed at ``version``.

        Raises:
            DeviceStateError: the record cannot be written.
        """
        current = self.load()
        current[name] = version
        data = {"format": ARTIFACTS_FORMAT, "artifacts": current}
        write_atomic(self.path, json.dumps(data, indent=2, sort_keys=True).encode())


def installed_as(
    name: str, running: SlotContent | None, in_place: Mapping[str, str]
) -> SlotContent | None:
    """The installed artifact called ``name`` (running root file system first), or ``None``."""
    if running is not None and running.name == name:
        return running
    version = in_place.get(name)
    return None if version is None else SlotContent(name, version)


def make_inventory(
    *,
    device_type: str,
    attributes: Mapping[str, str],
    active_slot: str,
    running: SlotContent | None,
    in_place: Mapping[str, str],
) -> Inventory:
    """The inventory: the running root file system, then ``artifact.<name>`` attributes."""
    # Imported here, not at the top: only sending the inventory needs it.
    from fleetcast.delta import available_engines

    return Inventory(
        device_type=device_type,
        artifact_name=running.name if running else None,
        artifact_version=running.version if running else None,
        attributes={
            **attributes,
            "fleetcast_slot": active_slot,
            # Deltas (ADR 0005): what this agent can apply, and from which image.
            "fleetcast_delta_engines": ",".join(available_engines()),
            **({"fleetcast_rootfs_sha256": running.sha256} if running and running.sha256 else {}),
            **{f"{ATTRIBUTE_PREFIX}{n}": v for n, v in sorted(in_place.items())},
        },
    )


__all__ = [
    "ARTIFACTS_FILE",
    "ATTRIBUTE_PREFIX",
    "InstalledVersions",
    "installed_as",
    "make_inventory",
]
