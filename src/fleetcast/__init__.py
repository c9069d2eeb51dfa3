"""Fleetcast: over-the-air updates for fleets of Linux devices.

The package is layered so that dependencies point inward:

- ``fleetcast.core``: pure models (versions, manifests, device-API wire
  objects, signatures). No I/O, no network, no database.
- ``fleetcast.artifact``: the artifact file format (build, read, verify).
- ``fleetcast.agent``: the device side. Imports ``core`` and ``artifact`` only,
  never the server or its dependencies.
- ``fleetcast.server``: the FastAPI update server (extra ``fleetcast[server]``).
- ``fleetcast.cli``, ``fleetcast.sim``: the operator CLI, the demo and the
  fleet simulator, on top of everything else.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
