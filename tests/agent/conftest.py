"""Fixtures for the agent tests: a simulated device, signed artifacts, an in-process fake API."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import (
    Agent,
    AgentLimits,
    FileByteSource,
    NextUpdate,
    SimulatedDevice,
    StepResult,
)
from fleetcast.agent.install import ByteStream, FileByteStream
from fleetcast.core.signing import public_key_to_pem
from fleetcast.core.wire import AuthResponse, Inventory, StatusReport, UpdateOffer
from fleetcast.exceptions import ServerResponseError, TransportError
from tests.factories import BuiltArtifact, make_image

MiB = 1024 * 1024
TEST_LIMITS = AgentLimits(
    checkpoint_interval=1,  # a checkpoint at every frame boundary
    download_chunk=16 * 1024,
    max_retries=2,
    backoff_base=0.001,
    backoff_cap=0.002,
    max_download_attempts=5,
)


def noisy_image(version: str, size: int) -> bytes:
    """An incompressible image, so the artifact is as large as the image (several frames)."""
    return random.Random(version).randbytes(size)


class PowerCut(BaseException):
    """Raised from ``on_transition``: the process dies right there (nothing catches it)."""


@dataclass
class CutAt:
    """A transition hook that cuts the power at the ``nth`` occurrence of ``name``."""

    name: str
    nth: int = 1
    seen: list[str] = field(default_factory=list)
    fired: bool = False

    def __call__(self, transition: str) -> None:
        self.seen.append(transition)
        if not self.fired and self.seen.count(self.name) == self.nth:
            self.fired = True
            raise PowerCut(self.name)


class FailingStream:
    """A stream that breaks off after ``budget`` bytes, like a dropped connection."""

    def __init__(self, inner: FileByteStream, budget: int | None) -> None:
        self._inner = inner
        self._budget = budget

    @property
    def offset(self) -> int:
        return self._inner.offset

    @property
    def validator(self) -> str | None:
        return None

    def read(self, n: int) -> bytes:
        if self._budget is not None:
            if self._budget <= 0:
                raise TransportError("connection reset by peer (simulated)")
            n = min(n, self._budget)
        data = self._inner.read(n)
        if self._budget is not None:
            self._budget -= len(data)
        return data

    def close(self) -> None:
        self._inner.close()


class RecordingSource:
    """A file source that records the offsets asked for and can fail once after N bytes."""

    def __init__(self, path: Path, *, fail_after: int | None = None) -> None:
        self._file = FileByteSource(path)
        self.fail_after = fail_after
        self.opened: list[int] = []
        self.bytes_served = 0

    def open(self, offset: int, *, validator: str | None = None) -> ByteStream:
        self.opened.append(offset)
        budget, self.fail_after = self.fail_after, None  # fail only the first time
        return _Counting(FailingStream(self._file.open(offset), budget), self)


class _Counting:
    def __init__(self, inner: FailingStream, owner: RecordingSource) -> None:
        self._inner = inner
        self._owner = owner

    @property
    def offset(self) -> int:
        return self._inner.offset

    @property
    def validator(self) -> str | None:
        return None

    def read(self, n: int) -> bytes:
        data = self._inner.read(n)
        self._owner.bytes_served += len(data)
        return data

    def close(self) -> None:
        self._inner.close()


@dataclass
class FakeApi:
    """The device API in process, with the server's rules for status reports.

    Terminal reports end a deployment (it is no longer offered); a different
    report after a terminal one is a 409 ``status_conflict`` (recorded in
    ``conflicts``: the agent must never cause one).
    """

    offers: dict[str, UpdateOffer] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    reports: list[tuple[str, StatusReport]] = field(default_factory=list)
    inventories: list[Inventory] = field(default_factory=list)
    aborted: set[str] = field(default_factory=set)
    conflicts: list[str] = field(default_factory=list)
    fail_download_after: int | None = None
    unreachable: bool = False
    sources: list[RecordingSource] = field(default_factory=list)
    final: dict[str, StatusReport] = field(default_factory=dict)

    def offer(
        self,
        artifact: BuiltArtifact,
        *,
        deployment_id: str = "dep-1",
        allow_downgrade: bool = False,
    ) -> UpdateOffer:
        artifact_id = f"art-{artifact.signed.manifest.version}"
        offer = UpdateOffer(
            deployment_id=deployment_id,
            artifact_id=artifact_id,
            artifact_size=artifact.path.stat().st_size,
            artifact_sha256="0" * 64,
            download_url=f"/api/device/v1/artifacts/{artifact_id}/download",
            manifest=artifact.signed,
            allow_downgrade=allow_downgrade,
        )
        self.offers[deployment_id] = offer
        self.artifacts[artifact_id] = artifact.path
        return offer

    def _check(self) -> None:
        if self.unreachable:
            raise TransportError("connection refused (simulated)")

    def authenticate(self) -> AuthResponse:
        self._check()
        return AuthResponse("dev-1", "token", 3600)

    def send_inventory(self, inventory: Inventory) -> None:
        self._check()
        self.inventories.append(inventory)

    def next_update(self, *, wait: int, etag: str | None) -> NextUpdate:
        self._check()
        for offer in self.offers.values():
            if offer.deployment_id not in self.final and offer.deployment_id not in self.aborted:
                return NextUpdate(offer, "etag-offer")
        return NextUpdate(None, "etag-none")

    def report_status(self, deployment_id: str, report: StatusReport) -> None:
        self._check()
        final = self.final.get(deployment_id)
        if final is not None:
            if final != report:
                self.conflicts.append(f"{deployment_id}: {report.status} after {final.status}")
                raise ServerResponseError("conflict", status_code=409, code="status_conflict")
            return
        if deployment_id in self.aborted:
            raise ServerResponseError("aborted", status_code=409, code="deployment_aborted")
        self.reports.append((deployment_id, report))
        if report.status.terminal:
            self.final[deployment_id] = report

    def artifact_source(self, offer: UpdateOffer) -> RecordingSource:
        budget, self.fail_download_after = self.fail_download_after, None
        source = RecordingSource(self.artifacts[offer.artifact_id], fail_after=budget)
        self.sources.append(source)
        return source

    def close(self) -> None:
        pass

    def statuses(self, deployment_id: str = "dep-1") -> list[str]:
        return [r.status.value for d, r in self.reports if d == deployment_id]


TERMINAL = {
    StepResult.UPDATED,
    StepResult.ROLLED_BACK,
    StepResult.FAILED,
    StepResult.ALREADY_INSTALLED,
    StepResult.ABORTED,
}


def drive(
    device: SimulatedDevice,
    api: FakeApi,
    *,
    hook: Callable[[str], None] | None = None,
    max_steps: int = 60,
) -> list[StepResult]:
    """Do what ``run_agent`` does (reboot = power cycle + fresh Agent) until the update ends.

    Stops at the first terminal result, or at an IDLE step once the server
    has nothing left to offer.
    """
    results: list[StepResult] = []
    agent = Agent(device.config, client=api, on_transition=hook)
    for _ in range(max_steps):
        result = agent.step()
        results.append(result)
        if result is StepResult.REBOOT_REQUIRED:
            device.power_cycle()
            agent = Agent(device.config, client=api, on_transition=hook)
        elif result in TERMINAL or (
            result is StepResult.IDLE and api.next_update(wait=0, etag=None).offer is None
        ):
            return results
    raise AssertionError(f"the agent did not settle: {results}")


@pytest.fixture
def trusted_key_file(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "vendor.pub"
    path.write_text(public_key_to_pem(vendor_key.public_key()))
    return path


@pytest.fixture
def make_device(tmp_path: Path, trusted_key_file: Path) -> Callable[..., SimulatedDevice]:
    counter = iter(range(1000))

    def factory(
        *,
        health_commands: list[list[str]] | None = None,
        image: bytes | None = None,
        version: str = "1.0.0",
    ) -> SimulatedDevice:
        n = next(counter)
        return SimulatedDevice.create(
            tmp_path / f"device-{n}",
            server_url="http://fleetcast.test",
            device_type="acme-gw",
            identity={"serial": f"SN-{n:04d}"},
            image=image if image is not None else make_image(version, 512 * 1024),
            artifact_name="acme-fw",
            artifact_version=version,
            trusted_keys=[trusted_key_file],
            health_commands=health_commands,
            health_timeout=5,
            long_poll=0,
            poll_interval=0,
            limits=TEST_LIMITS,
        )

    return factory


@pytest.fixture
def device(make_device: Callable[..., SimulatedDevice]) -> SimulatedDevice:
    return make_device()


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()
