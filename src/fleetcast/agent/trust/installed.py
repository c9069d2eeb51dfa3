"""The TUF targets of artifacts installed in place: ``<state_dir>/tuf/in-place.json``.

A root file system's target is part of its slot record
(:class:`~fleetcast.agent.slots.SlotContent`), so it follows the slot the
bootloader really runs. Artifacts of ``files``/``script``/``module`` payloads
have no slot: their target (and so their release counter, the floor for the
next update of that name) is kept here, written atomically when such an
update commits. An unreadable record counts as empty: release counters then
start from 0 for those names (weaker rollback protection, never a bricked
device), and the agent logs why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from fleetcast.agent.atomicfile import write_atomic
from fleetcast.agent.slots import InstalledTarget
from fleetcast.exceptions import DeviceStateError

IN_PLACE_FILE: Final = "in-place.json"


class InPlaceTargets:
    """``name -> InstalledTarget`` of the artifacts installed in place."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "tuf" / IN_PLACE_FILE
        self.problem: str | None = None

    def load(self) -> dict[str, InstalledTarget]:
        """Every recorded target by artifact name (empty if none or unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            self.problem = f"in-place target record {self.path} is unreadable: {e}"
            return {}
        if not isinstance(data, dict):
            self.problem = f"in-place target record {self.path} is not an object"
            return {}
        out = {}
        for name, entry in data.items():
            target = InstalledTarget.from_dict(entry)
            if isinstance(name, str) and target is not None:
                out[name] = target
        return out

    def get(self, name: str) -> InstalledTarget | None:
        return self.load().get(name)

    def set(self, name: str, target: InstalledTarget) -> None:
        """Record the target of ``name`` (atomic and durable).

        Raises:
            DeviceStateError: the record cannot be written.
        """
        current = self.load()
        current[name] = target
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DeviceStateError(f"cannot create {self.path.parent}: {e}") from e
        data = {k: v.to_dict() for k, v in sorted(current.items())}
        write_atomic(self.path, json.dumps(data, indent=2, sort_keys=True).encode())


__all__ = ["IN_PLACE_FILE", "InPlaceTargets"]
