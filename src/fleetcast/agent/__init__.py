"""The Fleetcast device agent: polls the server, installs signed updates A/B, rolls back.

The workflow (see :mod:`fleetcast.agent.runner` for the state machine): poll
``/next``; verify the offered manifest's signature and compatibility; stream
the artifact into the inactive slot, checkpointing so a cut download resumes;
verify length and hash against the signed manifest; arm a trial boot; reboot;
run health checks; commit, or roll back to the previous slot. Artifacts of
``files`` and ``script`` payloads are installed in place instead, without a
reboot, all payloads or none (:mod:`fleetcast.agent.inplace`). Every state
change is journaled atomically, so a power cut at any point leaves a device
that boots a committed slot and finishes or undoes the update.

The agent imports only the standard library, httpx, cryptography, pyzstd and
``fleetcast.core`` / ``fleetcast.artifact`` / ``fleetcast.exceptions``; never
the server.
"""

from __future__ import annotations

import typing as _typing

from fleetcast._lazy import lazy_exports as _lazy_exports

if _typing.TYPE_CHECKING:
    from fleetcast.agent.bootloader import Bootloader, SimulatedUBoot, simulate_boot
    from fleetcast.agent.client import DeviceApi, DeviceClient, HttpByteSource, NextUpdate
    from fleetcast.agent.config import (
        AgentConfig,
        AgentLimits,
        BootloaderConfig,
        HealthConfig,
        RebootConfig,
        SlotsConfig,
    )
    from fleetcast.agent.install import ByteSource, ByteStream, FileByteSource, Installer
    from fleetcast.agent.journal import Journal, JournalState, Phase
    from fleetcast.agent.runner import TRANSITIONS, Agent, StepResult, run_agent
    from fleetcast.agent.simulated import SimulatedDevice

# Public name -> defining module. Imported on first use (PEP 562): an idle
# agent must not pay for the artifact reader, zstd and the installers.
_EXPORTS: dict[str, str] = {
    "Bootloader": "bootloader",
    "SimulatedUBoot": "bootloader",
    "simulate_boot": "bootloader",
    "DeviceApi": "client",
    "DeviceClient": "client",
    "HttpByteSource": "client",
    "NextUpdate": "client",
    "AgentConfig": "config",
    "AgentLimits": "config",
    "BootloaderConfig": "config",
    "HealthConfig": "config",
    "RebootConfig": "config",
    "SlotsConfig": "config",
    "ByteSource": "install",
    "ByteStream": "install",
    "FileByteSource": "install",
    "Installer": "install",
    "Journal": "journal",
    "JournalState": "journal",
    "Phase": "journal",
    "TRANSITIONS": "runner",
    "Agent": "runner",
    "StepResult": "runner",
    "run_agent": "runner",
    "SimulatedDevice": "simulated",
}


__all__ = [
    "TRANSITIONS",
    "Agent",
    "AgentConfig",
    "AgentLimits",
    "Bootloader",
    "BootloaderConfig",
    "ByteSource",
    "ByteStream",
    "DeviceApi",
    "DeviceClient",
    "FileByteSource",
    "HealthConfig",
    "HttpByteSource",
    "Installer",
    "Journal",
    "JournalState",
    "NextUpdate",
    "Phase",
    "RebootConfig",
    "SimulatedDevice",
    "SimulatedUBoot",
    "SlotsConfig",
    "StepResult",
    "run_agent",
    "simulate_boot",
]

__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS, __all__)
