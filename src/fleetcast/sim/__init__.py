"""Simulated fleets: many real agents on simulated hardware, and an in-process server.

Used by ``fleetcast demo``, the end-to-end tests and anyone sizing a
deployment. Every simulated device is a real :class:`fleetcast.agent.Agent`
talking HTTP to a real server; only the hardware (slots, bootloader,
reboot) is simulated.
"""

from __future__ import annotations

from fleetcast.sim.fleet import SimulatedFleet
from fleetcast.sim.server import ServerThread

__all__ = ["ServerThread", "SimulatedFleet"]
