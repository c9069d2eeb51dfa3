"""A fleet of simulated devices, each a real agent in its own thread."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from fleetcast.agent import SimulatedDevice, run_agent
from fleetcast.agent.config import TrustConfig


class SimulatedFleet:
    """Creates simulated devices under ``root`` and runs their agents in threads.

    A device's hardware (A/B slot files, U-Boot environment, reboot) is
    simulated; its agent is the real one, talking HTTP to ``server_url``.
    """

    def __init__(
        self,
        root: Path,
        server_url: str,
        trusted_keys: Sequence[Path],
        *,
        trust: TrustConfig | None = None,
    ) -> None:
        self.root = root
        self.server_url = server_url
        self.trusted_keys = list(trusted_keys)
        #: TUF root files every device ships with (None: signature-only devices).
        self.trust = trust
        self.devices: list[SimulatedDevice] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: dict[str, BaseException] = {}

    def add(
        self,
        count: int,
        *,
        device_type: str,
        image: bytes,
        artifact_name: str,
        artifact_version: str,
        prefix: str = "sim",
        health_commands: list[list[str]] | None = None,
        long_poll: int = 10,
        poll_interval: float = 2.0,
    ) -> list[SimulatedDevice]:
        """Create ``count`` devices running ``artifact_name`` ``artifact_version``."""
        created = []
        start = len(self.devices)
        for index in range(start, start + count):
            serial = f"{prefix}-{index + 1:04d}"
            device_root = self.root / serial
            commands = health_commands
            if commands is None:
                # Each device's own health check: a marker file stands for a
                # fault (a sensor that stops working on the new version).
                commands = [["sh", "-c", f"sleep 1; test ! -e '{device_root}/faulty'"]]
            device = SimulatedDevice.create(
                device_root,
                server_url=self.server_url,
                device_type=device_type,
                identity={"serial": serial},
                image=image,
                artifact_name=artifact_name,
                artifact_version=artifact_version,
                trusted_keys=self.trusted_keys,
                health_commands=commands,
                long_poll=long_poll,
                poll_interval=poll_interval,
                trust=self.trust,
            )
            created.append(device)
        self.devices.extend(created)
        return created

    def start(self) -> None:
        """Start every device's agent in its own thread."""
        for device in self.devices:
            thread = threading.Thread(
                target=self._run, args=(device,), name=f"agent-{device.root.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _run(self, device: SimulatedDevice) -> None:
        try:
            run_agent(device.config, self._stop)
        except BaseException as e:  # a device that dies is data for the demo, not a crash
            self.errors[device.root.name] = e

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every agent to stop and wait for them."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=timeout)
        self._threads.clear()
        self._stop = threading.Event()

    def serial_of(self, device: SimulatedDevice) -> str:
        return device.root.name
