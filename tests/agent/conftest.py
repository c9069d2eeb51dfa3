"""Fixtures for the agent tests: a simulated device, signed artifacts, an in-process fake API."""

from __future__ import annotations

import io
import itertools
import random
import sys
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
from fleetcast.artifact import ArtifactReader, PayloadSource, build_artifact
from fleetcast.core.signing import public_key_to_pem
from fleetcast.core.wire import AuthResponse, Inventory, StatusReport, UpdateOffer
from fleetcast.exceptions import ServerResponseError, TransportError
from tests.factories import BuiltArtifact, make_artifact, make_image

MiB = 1024 * 1024
TEST_LIMITS = AgentLimits(
    checkpoint_interval=1,  # a checkpoint at every frame boundary
    download_chunk=16 * 1024,
    max_retries=2,
    backoff_base=0.001,
    backoff_cap=0.002,
    max_download_attempts=5,
)


Tree = Mapping[str, bytes | None]
"""A directory tree for a ``files`` payload: path -> file content, or ``None`` for a directory."""


def make_tar(tree: Tree, *, extra: Sequence[tarfile.TarInfo] = ()) -> bytes:
    """A tar archive of ``tree`` (files 0644, directories 0755), then the ``extra`` members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in tree.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return out.getvalue()


def read_tree(root: Path) -> dict[str, bytes | None]:
    """What is under ``root`` now, in the shape of :data:`Tree`."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def make_files_artifact(
    directory: Path,
    key: Ed25519PrivateKey,
    tree: Tree,
    dest: Path | str,
    *,
    name: str = "acme-conf",
    version: str = "1.1.0",
    **kwargs: object,
) -> BuiltArtifact:
    """A signed artifact with one ``files`` payload (``image`` holds the tar)."""
    return make_artifact(
        directory,
        key,
        name=name,
        version=version,
        image=make_tar(tree),
        payload_type="files",
        meta={"dest": str(dest)},
        **kwargs,  # type: ignore[arg-type]
    )


def make_bundle(
    directory: Path,
    key: Ed25519PrivateKey,
    payloads: Sequence[tuple[str, str, bytes, dict[str, str]]],
    *,
    name: str = "acme-bundle",
    version: str = "1.1.0",
    depends: dict[str, str] | None = None,
) -> BuiltArtifact:
    """A signed multi-payload artifact from ``(name, type, content, meta)`` tuples."""
    directory.mkdir(parents=True, exist_ok=True)
    sources = []
    for payload_name, payload_type, content, meta in payloads:
        path = directory / f"{name}-{version}-{payload_name}.payload"
        path.write_bytes(content)
        sources.append(PayloadSource(payload_name, payload_type, path, meta))
    out = directory / f"{name}-{version}.fca"
    signed = build_artifact(
        out,
        name=name,
        version=version,
        compatible=["acme-gw"],
        payloads=sources,
        key=key,
        depends=depends,
    )
    return BuiltArtifact(out, signed, b"")


def flip_payload_byte(artifact: BuiltArtifact, payload: int = 0) -> None:
    """Tamper with the artifact file on the server: flip a byte in the middle of a payload."""
    with artifact.path.open("rb") as fh:
        reader = ArtifactReader(fh)
        reader.read_manifest()
        entries = [entry for entry, _ in itertools.islice(reader.payloads(), payload + 1)]
    entry = entries[payload]
    data = bytearray(artifact.path.read_bytes())
    data[entry.data_offset + entry.payload.compressed_size // 2] ^= 0x01
    artifact.path.write_bytes(bytes(data))


def python_script(body: str) -> bytes:
    """A script payload run by this test interpreter."""
    return f"#!{sys.executable}\n{body}\n".encode()


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
        files_roots: Sequence[Path] = (),
        script_timeout: float | None = None,
    ) -> SimulatedDevice:
        limits = TEST_LIMITS
        if script_timeout is not None:
            limits = replace(limits, script_timeout=script_timeout)
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
            limits=limits,
            files_roots=files_roots,
        )

    return factory


@pytest.fixture
def device(make_device: Callable[..., SimulatedDevice]) -> SimulatedDevice:
    return make_device()


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()
