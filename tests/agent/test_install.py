"""The streaming installer, from a local-file ByteSource, without a server."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent.config import AgentLimits
from fleetcast.agent.install import FileByteSource, Installer
from fleetcast.agent.journal import ResumePoint
from fleetcast.agent.slots import SlotContent
from fleetcast.core.manifest import SignedManifest
from fleetcast.core.wire import UpdateOffer
from fleetcast.exceptions import (
    ArtifactFormatError,
    DowngradeError,
    IncompatibleError,
    IntegrityError,
    InvalidDataError,
    SignatureError,
    TransportError,
    ValidationError,
)
from tests.agent.conftest import TEST_LIMITS, MiB, RecordingSource, noisy_image
from tests.factories import BuiltArtifact, make_artifact

INSTALLED = SlotContent("acme-fw", "1.0.0")


@pytest.fixture
def big(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> BuiltArtifact:
    return make_artifact(tmp_path / "art", vendor_key, image=noisy_image("1.1.0", 3 * MiB))


def _offer(artifact: BuiltArtifact, **changes: object) -> UpdateOffer:
    offer = UpdateOffer(
        "dep-1",
        "art-1",
        artifact.path.stat().st_size,
        "0" * 64,
        "/download",
        artifact.signed,
    )
    return replace(offer, **changes)  # type: ignore[arg-type]


def _installer(
    vendor_key: Ed25519PrivateKey, points: list[ResumePoint], limits: AgentLimits = TEST_LIMITS
) -> Installer:
    return Installer(
        device_type="acme-gw",
        trusted_keys=[vendor_key.public_key()],
        limits=limits,
        checkpoint=points.append,
    )


def test_good_install(tmp_path: Path, vendor_key: Ed25519PrivateKey, big: BuiltArtifact) -> None:
    """The image lands byte for byte; a checkpoint is taken at each frame boundary."""
    slot = tmp_path / "slot-b.img"
    slot.write_bytes(b"\xff" * (4 * MiB))  # an older, longer image must not leave a tail
    points: list[ResumePoint] = []
    installer = _installer(vendor_key, points)
    installer.verify_offer(_offer(big), INSTALLED)
    installer.install(_offer(big), slot, FileByteSource(big.path))
    assert slot.read_bytes() == big.image
    assert [p.output for p in points] == [1 * MiB, 2 * MiB, 3 * MiB]
    assert len({p.data_offset for p in points}) == 1


def test_resume_after_a_cut_download(
    tmp_path: Path, vendor_key: Ed25519PrivateKey, big: BuiltArtifact
) -> None:
    """The connection drops after 1.5 MiB. A new installer resumes from the journaled
    checkpoint: it fetches from data_offset + compressed, not from 0, and the final image
    is identical."""
    slot = tmp_path / "slot-b.img"
    points: list[ResumePoint] = []
    source = RecordingSource(big.path, fail_after=1536 * 1024)
    with pytest.raises(TransportError):
        _installer(vendor_key, points).install(_offer(big), slot, source)
    assert points, "a checkpoint must have been taken before the cut"
    resume = points[-1]
    served_before = source.bytes_served
    _installer(vendor_key, points).install(_offer(big), slot, source, resume=resume)
    assert source.opened == [0, resume.data_offset + resume.compressed]
    payload = big.signed.manifest.payloads[0]
    # Only the rest of the payload is fetched again.
    assert source.bytes_served - served_before == payload.compressed_size - resume.compressed
    assert slot.read_bytes() == big.image


def test_resume_detects_a_slot_changed_behind_its_back(
    tmp_path: Path, vendor_key: Ed25519PrivateKey, big: BuiltArtifact
) -> None:
    """If the bytes already written were altered, the rebuilt hash does not match."""
    slot = tmp_path / "slot-b.img"
    points: list[ResumePoint] = []
    with pytest.raises(TransportError):
        _installer(vendor_key, points).install(
            _offer(big), slot, RecordingSource(big.path, fail_after=1536 * 1024)
        )
    with slot.open("r+b") as fh:
        fh.write(b"X")
    with pytest.raises(IntegrityError, match="sha256"):
        _installer(vendor_key, points).install(
            _offer(big), slot, FileByteSource(big.path), resume=points[-1]
        )


def test_tampered_payload_is_rejected(
    tmp_path: Path, vendor_key: Ed25519PrivateKey, big: BuiltArtifact
) -> None:
    data = bytearray(big.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    big.path.write_bytes(bytes(data))
    with pytest.raises(InvalidDataError):
        _installer(vendor_key, []).install(_offer(big), tmp_path / "s", FileByteSource(big.path))


def test_truncated_artifact_is_rejected(
    tmp_path: Path, vendor_key: Ed25519PrivateKey, big: BuiltArtifact
) -> None:
    big.path.write_bytes(big.path.read_bytes()[: 2 * MiB])
    with pytest.raises((IntegrityError, ArtifactFormatError)):
        _installer(vendor_key, []).install(_offer(big), tmp_path / "s", FileByteSource(big.path))


def test_artifact_with_another_manifest_is_rejected(
    tmp_path: Path, vendor_key: Ed25519PrivateKey, big: BuiltArtifact
) -> None:
    """The offered manifest verifies, but the file served is a different artifact."""
    other = make_artifact(tmp_path / "other", vendor_key, version="1.1.1")
    with pytest.raises(IntegrityError, match="differs"):
        _installer(vendor_key, []).install(
            _offer(big, artifact_size=10 * MiB), tmp_path / "s", FileByteSource(other.path)
        )


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ("unsigned", SignatureError),
        ("untrusted", SignatureError),
        ("bad-signature", SignatureError),
        ("device-type", IncompatibleError),
        ("downgrade", DowngradeError),
    ],
)
def test_refused_offers(
    tmp_path: Path, vendor_key: Ed25519PrivateKey, change: str, error: type[Exception]
) -> None:
    key = Ed25519PrivateKey.generate() if change == "untrusted" else vendor_key
    artifact = make_artifact(
        tmp_path / "a",
        key,
        compatible=("other",) if change == "device-type" else ("acme-gw",),
        version="0.9.0" if change == "downgrade" else "1.1.0",
    )
    signed = artifact.signed
    if change == "unsigned":
        signed = SignedManifest(signed.manifest, (), signed.signed_bytes)
    if change == "bad-signature":
        sig = signed.signatures[0]
        flipped = replace(sig, sig=("0" if sig.sig[0] != "0" else "1") + sig.sig[1:])
        signed = SignedManifest(signed.manifest, (flipped,), signed.signed_bytes)
    with pytest.raises(error):
        _installer(vendor_key, []).verify_offer(
            replace(_offer(artifact), manifest=signed), INSTALLED
        )


def test_downgrade_allowed(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> None:
    artifact = make_artifact(tmp_path / "a", vendor_key, version="0.9.0")
    _installer(vendor_key, []).verify_offer(_offer(artifact, allow_downgrade=True), INSTALLED)


@pytest.mark.parametrize(
    ("meta", "roots", "error", "match"),
    [
        ({}, (), ValidationError, "dest"),
        ({"dest": "etc/acme"}, (), ValidationError, "absolute"),
        ({"dest": "/etc/../root/.ssh"}, (), ValidationError, "absolute"),
        ({"dest": "/"}, (), ValidationError, "absolute"),
        ({"dest": "/etc/acme"}, (Path("/var/lib/acme"),), IncompatibleError, "files_roots"),
        ({"dest": "/var/lib/acme"}, (Path("/var/lib/acme"),), IncompatibleError, "files_roots"),
    ],
)
def test_files_destination_is_checked_with_the_offer(
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    meta: dict[str, str],
    roots: tuple[Path, ...],
    error: type[Exception],
    match: str,
) -> None:
    """A files payload needs an absolute dest (strictly inside files_roots, when set)."""
    artifact = make_artifact(tmp_path / "a", vendor_key, payload_type="files", meta=meta)
    installer = Installer(
        device_type="acme-gw",
        trusted_keys=[vendor_key.public_key()],
        limits=TEST_LIMITS,
        checkpoint=[].append,
        files_roots=roots,
        state_dir=tmp_path / "state",
    )
    with pytest.raises(error, match=match):
        installer.verify_offer(_offer(artifact), INSTALLED)


def test_files_destination_inside_a_root_is_accepted(
    tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    artifact = make_artifact(
        tmp_path / "a", vendor_key, payload_type="files", meta={"dest": "/var/lib/acme/conf"}
    )
    Installer(
        device_type="acme-gw",
        trusted_keys=[vendor_key.public_key()],
        limits=TEST_LIMITS,
        checkpoint=[].append,
        files_roots=(Path("/var/lib/acme"),),
        state_dir=tmp_path / "state",
    ).verify_offer(_offer(artifact), INSTALLED)


def test_installed_content_of_another_name_does_not_count(
    tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """``depends`` and downgrades compare with the installed artifact of the same name only."""
    needs = make_artifact(tmp_path / "a", vendor_key, depends={"version": ">=1.0.0"})
    with pytest.raises(IncompatibleError, match="needs installed version"):
        _installer(vendor_key, []).verify_offer(_offer(needs), SlotContent("other", "1.0.0"))
    older = make_artifact(tmp_path / "b", vendor_key, version="0.9.0")
    _installer(vendor_key, []).verify_offer(_offer(older), SlotContent("other", "1.0.0"))


def test_offered_size_must_cover_the_signed_payload(
    tmp_path: Path, vendor_key: Ed25519PrivateKey, big: BuiltArtifact
) -> None:
    with pytest.raises(IncompatibleError, match="smaller"):
        _installer(vendor_key, []).verify_offer(_offer(big, artifact_size=1000), INSTALLED)
