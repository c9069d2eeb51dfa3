"""A complete simulated device in one directory, for demos, tests and the fleet simulator.

Layout of ``root``::

    agent.toml        the agent configuration (AgentConfig.load reads it)
    slot-a.img        slot A: the factory image, committed and booted
    slot-b.img        slot B: empty
    uboot.env         the simulated U-Boot environment (boot_part=a ...)
    uboot.env.cmdline the "kernel command line" of the running system
    state/            journal, device key, slot record, in-place artifact versions

Everything the agent knows is in these files, so a device can be stopped,
"power-cycled" with :func:`~fleetcast.agent.bootloader.simulate_boot` and
started again from disk, many devices can run as threads of one process,
and a test can look at exactly what a real device would have on its flash.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fleetcast.agent.atomicfile import write_atomic
from fleetcast.agent.bootloader import SimulatedUBoot, simulate_boot
from fleetcast.agent.config import (
    AgentConfig,
    AgentLimits,
    BootloaderConfig,
    HealthConfig,
    SlotsConfig,
    TrustConfig,
)
from fleetcast.agent.inventory import InstalledVersions
from fleetcast.agent.slots import InstalledArtifacts, SlotContent
from fleetcast.exceptions import DeviceStateError


class SimulatedDevice:
    """A simulated device rooted at one directory (see the module docstring).

    Args:
        root: the device's directory, as written by :meth:`create`.
    """

    CONFIG_FILE = "agent.toml"

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        server_url: str,
        device_type: str,
        identity: dict[str, str],
        image: bytes,
        artifact_name: str,
        artifact_version: str,
        trusted_keys: list[Path],
        health_commands: Sequence[Sequence[str]] | None = None,
        health_timeout: float = 30.0,
        long_poll: int = 25,
        poll_interval: float = 30.0,
        enrollment_token: str | None = None,
        attributes: dict[str, str] | None = None,
        limits: AgentLimits | None = None,
        files_roots: Sequence[Path] = (),
        trust: TrustConfig | None = None,
    ) -> SimulatedDevice:
        """Write a factory-fresh device: image in slot A (committed, booted), slot B empty.

        ``trust`` ships TUF root files with the device (ADR 0008), as a vendor
        would put them into the factory image.

        Raises:
            DeviceStateError: ``root`` already holds a device, or cannot be written.
        """
        root = root.resolve()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DeviceStateError(f"cannot create device directory {root}: {e}") from e
        if (root / cls.CONFIG_FILE).exists():
            raise DeviceStateError(f"{root} already holds a simulated device")
        slot_a, slot_b, env_file = root / "slot-a.img", root / "slot-b.img", root / "uboot.env"
        write_atomic(slot_a, image)
        write_atomic(slot_b, b"")
        SimulatedUBoot.create(env_file, slot_a=slot_a, slot_b=slot_b, boot_part="a")
        config = AgentConfig(
            server_url=server_url,
            device_type=device_type,
            state_dir=root / "state",
            trusted_keys=[p.resolve() for p in trusted_keys],
            identity=dict(identity),
            attributes=dict(attributes or {}),
            bootloader=BootloaderConfig(type="simulated", env_file=env_file),
            slots=SlotsConfig(a=slot_a, b=slot_b),
            poll_interval=poll_interval,
            long_poll=long_poll,
            enrollment_token=enrollment_token,
            health=HealthConfig(
                commands=tuple(tuple(c) for c in (health_commands or ())),
                timeout=health_timeout,
            ),
            limits=limits or AgentLimits(),
            files_roots=tuple(files_roots),
            trust=trust,
        )
        config.state_dir.mkdir(exist_ok=True)
        InstalledArtifacts(config.state_dir).set("a", SlotContent(artifact_name, artifact_version))
        simulate_boot(env_file)  # power on at the factory: boots slot A
        write_atomic(root / cls.CONFIG_FILE, config.to_toml().encode())
        return cls(root)

    @property
    def config_path(self) -> Path:
        return self.root / self.CONFIG_FILE

    @property
    def config(self) -> AgentConfig:
        """The device's configuration, read from ``agent.toml``.

        Raises:
            ValidationError: the file was edited into an invalid state.
        """
        return AgentConfig.load(self.config_path)

    @property
    def bootloader(self) -> SimulatedUBoot:
        return SimulatedUBoot(self.root / "uboot.env")

    def power_cycle(self) -> str:
        """Cut the power and boot again; return the slot that booted.

        Raises:
            DeviceStateError: no slot boots.
        """
        return simulate_boot(self.root / "uboot.env")

    def booted_slot(self) -> str:
        """The slot the simulated system is running from.

        Raises:
            DeviceStateError: the device was never booted.
        """
        return self.bootloader.active_slot()

    def installed(self) -> tuple[str | None, str | None]:
        """``(artifact_name, artifact_version)`` of the running slot, ``None`` if unknown."""
        content = InstalledArtifacts(self.root / "state").get(self.booted_slot())
        return (content.name, content.version) if content else (None, None)

    def installed_in_place(self) -> dict[str, str]:
        """``name -> version`` of the artifacts installed in place (``files`` / ``script``)."""
        return InstalledVersions(self.root / "state").load()

    def slot_bytes(self, slot: str) -> bytes:
        """The current content of slot ``"a"`` or ``"b"``."""
        return (self.root / f"slot-{slot}.img").read_bytes()


__all__ = ["SimulatedDevice"]
