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
