"""Fixtures for the TUF tests: a hostile-or-honest server, a TUF-mode simulated device."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import Agent, SimulatedDevice, StepResult
from fleetcast.agent.atomicfile import write_atomic
from fleetcast.agent.config import TrustConfig
from fleetcast.agent.slots import InstalledArtifacts
from tests.agent.conftest import TEST_LIMITS
from tests.agent.trust.evil_server import EvilServer, FleetState, Release
from tests.factories import make_artifact, make_image

FACTORY_VERSION = "1.0.0"
TERMINAL = {
    StepResult.UPDATED,
    StepResult.ROLLED_BACK,
    StepResult.FAILED,
    StepResult.ALREADY_INSTALLED,
    StepResult.ABORTED,
}


@pytest.fixture
def server() -> Iterator[EvilServer]:
    with EvilServer() as running:
        yield running


@pytest.fixture
def fleet(server: EvilServer) -> FleetState:
    return server.state


def tuf_device(
    root: Path, server: EvilServer, *, trusted_keys: Sequence[Path] = ()
) -> SimulatedDevice:
    """A factory-fresh simulated device in TUF mode, anchored on the repositories' first roots.

    No vendor key is trusted by default: TUF alone must decide (ADR 0008).
    """
    device = SimulatedDevice.create(
        root,
        server_url=server.url,
        device_type="acme-gw",
        identity={"serial": "SN-TUF-1"},
        image=make_image(FACTORY_VERSION, 512 * 1024),
        artifact_name="acme-fw",
        artifact_version=FACTORY_VERSION,
        trusted_keys=list(trusted_keys),
        long_poll=0,
        poll_interval=0,
        limits=TEST_LIMITS,
    )
    roots = root / "tuf-roots"
    roots.mkdir()
    (roots / "image-root.json").write_bytes(server.state.image.initial_root)
    (roots / "director-root.json").write_bytes(server.state.director.initial_root)
    # Appended as text: without [trust] an empty trusted_keys does not load.
    text = device.config_path.read_text() + (
        f'\n[trust]\nimage_root = "{roots / "image-root.json"}"\n'
        f'director_root = "{roots / "director-root.json"}"\nrefresh_interval = 3600.0\n'
    )
    write_atomic(device.config_path, text.encode())
    assert device.config.trust == TrustConfig(
        roots / "image-root.json", roots / "director-root.json", 3600.0
    )
    return device


@pytest.fixture
def device(tmp_path: Path, server: EvilServer) -> SimulatedDevice:
    return tuf_device(tmp_path / "device", server)


@dataclass
class Releaser:
    """Builds vendor-signed artifacts and releases them in the image repository."""

    directory: Path
    key: Ed25519PrivateKey
    fleet: FleetState

    def __call__(
        self,
        version: str,
        *,
        release_counter: int,
        compatible: tuple[str, ...] = ("acme-gw",),
        in_image_repo: bool = True,
        key: Ed25519PrivateKey | None = None,
        image: bytes | None = None,
        **kwargs: Any,
    ) -> Release:
        built = make_artifact(
            self.directory / f"{version}-{len(self.fleet.artifacts)}",
            key or self.key,
            version=version,
            compatible=compatible,
            image=make_image(version, 512 * 1024) if image is None else image,
            **kwargs,
        )
        return self.fleet.release(
            built.path.read_bytes(),
            built.signed,
            release_counter=release_counter,
            in_image_repo=in_image_repo,
        )


@pytest.fixture
def release(tmp_path: Path, vendor_key: Ed25519PrivateKey, fleet: FleetState) -> Releaser:
    return Releaser(tmp_path / "artifacts", vendor_key, fleet)


def run_update(device: SimulatedDevice, *, max_steps: int = 40) -> list[StepResult]:
    """What ``run_agent`` does (reboot = power cycle + fresh Agent) until the update ends."""
    results: list[StepResult] = []
    agent = Agent(device.config)
    try:
        for _ in range(max_steps):
            result = agent.step()
            results.append(result)
            if result is StepResult.REBOOT_REQUIRED:
                agent.close()
                device.power_cycle()
                agent = Agent(device.config)
            elif result in TERMINAL:
                return results
        return results
    finally:
        agent.close()


def failure_message(fleet: FleetState, deployment_id: str = "dep-1") -> str:
    final = fleet.final.get(deployment_id)
    assert final is not None and final["status"] == "failure", fleet.reports
    return str(final["message"])


def assert_on_committed_slot(device: SimulatedDevice, version: str = FACTORY_VERSION) -> None:
    """The device boots its committed slot with ``version``, and nothing is armed."""
    boot = device.bootloader
    assert device.booted_slot() == boot.committed_slot()
    assert not boot.in_trial()
    assert device.installed() == ("acme-fw", version)
    assert device.power_cycle() == boot.committed_slot()
    assert device.installed() == ("acme-fw", version)


def slot_record(device: SimulatedDevice) -> InstalledArtifacts:
    return InstalledArtifacts(device.root / "state")
