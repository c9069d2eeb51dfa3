"""Delta updates on the device: rebuilt from the running slot, verified against the
signed manifest, and the full artifact whenever the delta cannot be used."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice, StepResult
from fleetcast.agent.delta import install_delta, usable_delta
from fleetcast.agent.install import FileByteSource
from fleetcast.agent.slots import SlotContent
from fleetcast.core.wire import DeltaOffer, UpdateOffer
from fleetcast.delta import DeltaParams, generate_delta
from fleetcast.delta._format import MARKERS
from fleetcast.exceptions import DeltaError
from tests.agent.conftest import CutAt, FakeApi, PowerCut, RecordingSource, drive, noisy_image
from tests.delta.conftest import repeated_update
from tests.factories import BuiltArtifact, make_artifact

SIZE = 512 * 1024


@dataclass
class DeltaApi(FakeApi):
    """The fake server, also serving deltas (``delta_source``)."""

    delta_files: dict[str, Path] = field(default_factory=dict)
    delta_sources: list[RecordingSource] = field(default_factory=list)

    def delta_source(self, delta: DeltaOffer) -> RecordingSource:
        source = RecordingSource(self.delta_files[delta.url])
        self.delta_sources.append(source)
        return source


@pytest.fixture
def images() -> tuple[bytes, bytes]:
    old = noisy_image("1.0.0", SIZE)
    new = bytearray(old)
    new[100_000:102_000] = noisy_image("1.1.0", 2000)
    return old, bytes(new)


@pytest.fixture
def v11(
    tmp_path: Path, vendor_key: Ed25519PrivateKey, images: tuple[bytes, bytes]
) -> BuiltArtifact:
    return make_artifact(tmp_path / "artifacts", vendor_key, version="1.1.0", image=images[1])


def _delta(tmp_path: Path, old: bytes, new: bytes, engine: str = "zstd", **params: int) -> Path:
    (tmp_path / "old.img").write_bytes(old)
    (tmp_path / "new.img").write_bytes(new)
    out = tmp_path / f"{engine}.delta"
    generate_delta(tmp_path / "old.img", tmp_path / "new.img", out, DeltaParams(engine, **params))
    return out


def _offer_delta(api: DeltaApi, artifact: BuiltArtifact, path: Path, old: bytes) -> UpdateOffer:
    offer = api.offer(artifact)
    data = path.read_bytes()
    delta = DeltaOffer(
        url=f"/deltas/{path.name}",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        engine=path.stem,
        source_version="1.0.0",
        source_size=len(old),
        source_sha256=hashlib.sha256(old).hexdigest(),
    )
    api.delta_files[delta.url] = path
    offer = replace(offer, delta=delta)
    api.offers[offer.deployment_id] = offer
    return offer


@pytest.fixture
def api() -> DeltaApi:
    return DeltaApi()


@pytest.mark.parametrize("engine", ["hdiffpatch", "zstd"])
def test_update_from_a_delta_commits_without_downloading_the_artifact(
    make_device: Callable[..., SimulatedDevice],
    api: DeltaApi,
    v11: BuiltArtifact,
    images: tuple[bytes, bytes],
    tmp_path: Path,
    engine: str,
) -> None:
    """The server offers 1.1.0 with a delta from 1.0.0: the device rebuilds slot B
    from slot A and the delta, reboots, commits, and never fetches the artifact. It
    then records the image hash and reports it, with the engines it can apply."""
    old, new = images
    device = make_device(image=old)
    _offer_delta(api, v11, _delta(tmp_path, old, new, engine), old)
    results = drive(device, api)
    assert results[-1] is StepResult.UPDATED
    assert device.slot_bytes("b") == new
    assert api.sources == [] and api.delta_sources[0].opened == [0]
    assert api.delta_sources[0].bytes_served == api.offers["dep-1"].delta.size  # type: ignore[union-attr]
    record = json.loads((device.config.state_dir / "slots.json").read_text())
    assert record["b"]["sha256"] == hashlib.sha256(new).hexdigest()
    attributes = api.inventories[-1].attributes
    assert attributes["fleetcast_rootfs_sha256"] == hashlib.sha256(new).hexdigest()
    assert set(attributes["fleetcast_delta_engines"].split(",")) == {"hdiffpatch", "zstd"}
    assert api.statuses()[-1] == "success"


def test_a_delta_that_reads_back_the_new_slot_commits(
    make_device: Callable[..., SimulatedDevice],
    api: DeltaApi,
    vendor_key: Ed25519PrivateKey,
    tmp_path: Path,
) -> None:
    """The new image holds the same changed file four times: the delta (format 2)
    rebuilds copies 2-4 from copy 1, which the device reads back from slot B while
    it writes it; the image matches the signed manifest and the device commits."""
    old, new = repeated_update()
    artifact = make_artifact(tmp_path / "artifacts", vendor_key, version="1.1.0", image=new)
    device = make_device(image=old)
    path = _delta(tmp_path, old, new, segment_size=64 * 1024, window_size=160 * 1024)
    assert path.read_bytes().startswith(MARKERS[2])
    _offer_delta(api, artifact, path, old)
    results = drive(device, api)
    assert results[-1] is StepResult.UPDATED
    assert device.slot_bytes("b") == new
    assert api.sources == [] and [s.opened for s in api.delta_sources] == [[0]]
    assert api.statuses()[-1] == "success"


def test_a_corrupt_delta_falls_back_to_the_full_artifact(
    make_device: Callable[..., SimulatedDevice],
    api: DeltaApi,
    v11: BuiltArtifact,
    images: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    """A delta damaged on its way: the rebuilt image does not match the signed
    manifest, so the device installs the full artifact instead and still commits."""
    old, new = images
    device = make_device(image=old)
    path = _delta(tmp_path, old, new)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    _offer_delta(api, v11, path, old)
    results = drive(device, api)
    assert results[-1] is StepResult.UPDATED
    assert device.slot_bytes("b") == new
    assert [s.opened for s in api.delta_sources] == [[0]] and len(api.sources) == 1
    assert api.statuses()[-1] == "success"


def test_a_delta_from_another_image_is_not_applied(
    make_device: Callable[..., SimulatedDevice],
    api: DeltaApi,
    v11: BuiltArtifact,
    images: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    """The running slot holds 1.0.0, but not the bytes the delta was made from (a
    factory image built differently): the device notices before downloading the
    delta and installs the full artifact."""
    old, new = images
    device = make_device(image=old[:-1] + b"\0")
    _offer_delta(api, v11, _delta(tmp_path, old, new), old)
    results = drive(device, api)
    assert results[-1] is StepResult.UPDATED
    assert device.slot_bytes("b") == new
    assert all(s.opened == [] for s in api.delta_sources) and len(api.sources) == 1


def test_a_power_cut_after_abandoning_the_delta_resumes_with_the_full_artifact(
    make_device: Callable[..., SimulatedDevice],
    api: DeltaApi,
    v11: BuiltArtifact,
    images: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    old, new = images
    device = make_device(image=old)
    path = _delta(tmp_path, old, new)
    path.write_bytes(path.read_bytes()[:-5])  # truncated
    _offer_delta(api, v11, path, old)
    with pytest.raises(PowerCut):
        drive(device, api, hook=CutAt("delta-abandoned"))
    device.power_cycle()
    results = drive(device, api)
    assert results[-1] is StepResult.UPDATED
    assert device.slot_bytes("b") == new
    assert [s.opened for s in api.delta_sources] == [[0]]  # not tried again after the cut


def test_usable_delta_rules(v11: BuiltArtifact, images: tuple[bytes, bytes]) -> None:
    old, _ = images
    api = DeltaApi()
    offer = api.offer(v11)
    delta = DeltaOffer(
        url="/d",
        size=1000,
        sha256="a" * 64,
        engine="zstd",
        source_version="1.0.0",
        source_size=len(old),
        source_sha256=hashlib.sha256(old).hexdigest(),
    )
    offer = replace(offer, delta=delta)
    running = SlotContent("acme-fw", "1.0.0")
    assert usable_delta(offer, running) == delta
    assert usable_delta(offer, None) is None
    assert usable_delta(offer, SlotContent("acme-fw", "0.9.0")) is None
    assert usable_delta(offer, SlotContent("other", "1.0.0")) is None
    assert usable_delta(offer, SlotContent("acme-fw", "1.0.0", len(old), "b" * 64)) is None
    assert usable_delta(replace(offer, delta=replace(delta, engine="bsdiff")), running) is None
    too_big = v11.signed.manifest.payloads[0].compressed_size
    assert usable_delta(replace(offer, delta=replace(delta, size=too_big)), running) is None


def test_install_delta_checks_the_delta_file_hash(
    v11: BuiltArtifact, images: tuple[bytes, bytes], tmp_path: Path
) -> None:
    old, new = images
    path = _delta(tmp_path, old, new)
    (tmp_path / "slot-a").write_bytes(old)
    api = DeltaApi()
    offer = _offer_delta(api, v11, path, old)
    assert offer.delta is not None
    wrong = replace(offer.delta, sha256="0" * 64)
    with pytest.raises(DeltaError, match="differs from the offered"):
        install_delta(
            offer,
            wrong,
            source_slot=tmp_path / "slot-a",
            target_slot=tmp_path / "slot-b",
            source=FileByteSource(path),
        )
    install_delta(
        offer,
        offer.delta,
        source_slot=tmp_path / "slot-a",
        target_slot=tmp_path / "slot-b",
        source=FileByteSource(path),
    )
    assert (tmp_path / "slot-b").read_bytes() == new
