"""Encrypted payloads on the device: group and per-device keys, refusals, resume.

Every refusal must leave the device on its committed slot, unarmed, and the
slot being written must never hold a byte that did not come out of a
verified chunk.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fleetcast.agent import SimulatedDevice, StepResult
from fleetcast.agent.atomicfile import write_atomic
from fleetcast.agent.decryption import (
    X25519_ATTRIBUTE,
    X25519_KEY_FILE,
    load_or_create_x25519_key,
    public_hex,
)
from fleetcast.artifact import ArtifactReader, Encryption
from fleetcast.core.envelope import (
    TAG_SIZE,
    WrappedKey,
    new_content_key,
    wrap_key,
    x25519_private_to_pem,
)
from fleetcast.core.wire import UpdateOffer
from tests.agent.conftest import CutAt, FakeApi, MiB, PowerCut, drive
from tests.encrypted import make_encrypted_artifact, secret_image
from tests.factories import BuiltArtifact

CHUNK = 64 * 1024


@pytest.fixture
def group(tmp_path: Path) -> tuple[X25519PrivateKey, Path]:
    """A device group's key pair; the private half is a file given to the group's devices."""
    key = X25519PrivateKey.generate()
    path = tmp_path / "acme-gw-group.key"
    path.write_bytes(x25519_private_to_pem(key))
    path.chmod(0o600)
    return key, path


def _with_group_key(device: SimulatedDevice, key_file: Path) -> SimulatedDevice:
    """What an integrator writes into agent.toml: decryption_keys = [the group key]."""
    config = replace(device.config, decryption_keys=(key_file,))
    write_atomic(device.config_path, config.to_toml().encode())
    return device


def _group_artifact(
    tmp_path: Path, vendor_key: Ed25519PrivateKey, group: X25519PrivateKey, size: int = 2 * MiB
) -> BuiltArtifact:
    return make_encrypted_artifact(
        tmp_path / "artifacts",
        vendor_key,
        Encryption(recipients=(group.public_key(),), chunk_size=CHUNK),
        image=secret_image("1.1.0", size),
    )


def _per_device_offer(
    api: FakeApi, artifact: BuiltArtifact, wrapped: WrappedKey | None
) -> UpdateOffer:
    """The offer a server makes: the content key wrapped for this device (unsigned)."""
    offer = replace(api.offer(artifact), wrapped_key=wrapped)
    api.offers[offer.deployment_id] = offer
    return offer


def _member_span(artifact: BuiltArtifact) -> tuple[int, int]:
    with artifact.path.open("rb") as fh:
        reader = ArtifactReader(fh)
        reader.read_manifest()
        entry, _ = next(reader.payloads())
    return entry.data_offset, entry.payload.compressed_size


def _assert_untouched(device: SimulatedDevice, slot_a: bytes, image: bytes) -> None:
    """Still on the committed slot A, unarmed; slot B holds only verified plaintext."""
    assert device.booted_slot() == "a" and device.slot_bytes("a") == slot_a
    assert not device.bootloader.in_trial()
    written = device.slot_bytes("b")
    assert written == image[: len(written)]


def test_group_encrypted_update_installs(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    group: tuple[X25519PrivateKey, Path],
) -> None:
    """A device configured with its group's key installs a group-encrypted 1.1.0:
    it unwraps the content key from the signed manifest, decrypts while streaming,
    reboots into slot B and commits the exact image."""
    key, key_file = group
    _with_group_key(device, key_file)
    artifact = _group_artifact(tmp_path, vendor_key, key)
    api.offer(artifact)
    assert drive(device, api)[-1] is StepResult.UPDATED
    assert device.booted_slot() == "b" and not device.bootloader.in_trial()
    assert device.slot_bytes("b") == artifact.image


def test_per_device_encrypted_update_installs(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """The agent creates its X25519 key on first start (0600) and reports the public
    half as the inventory attribute fleetcast.x25519; the server wraps the content key
    for it in the offer, and the device installs the image."""
    encryption = Encryption(chunk_size=CHUNK)
    artifact = make_encrypted_artifact(
        tmp_path / "artifacts", vendor_key, encryption, image=secret_image("1.1.0", MiB)
    )
    device_key = load_or_create_x25519_key(device.config.state_dir)
    assert (device.config.state_dir / X25519_KEY_FILE).stat().st_mode & 0o777 == 0o600
    _per_device_offer(api, artifact, wrap_key(encryption.content_key, device_key.public_key()))
    assert drive(device, api)[-1] is StepResult.UPDATED
    assert device.slot_bytes("b") == artifact.image
    assert api.inventories[0].attributes[X25519_ATTRIBUTE] == public_hex(device_key)


def test_device_without_a_key_reports_a_clear_failure(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    group: tuple[X25519PrivateKey, Path],
) -> None:
    """A device outside the group (and no per-device key in the offer) refuses before
    downloading anything: the failure report says it has no key for the payload."""
    artifact = _group_artifact(tmp_path, vendor_key, group[0], size=256 * 1024)
    slot_a = device.slot_bytes("a")
    api.offer(artifact)
    assert drive(device, api)[-1] is StepResult.FAILED
    assert "no key to decrypt payload rootfs" in api.final["dep-1"].message
    assert api.sources == []
    _assert_untouched(device, slot_a, artifact.image)


@pytest.mark.parametrize("attack", ["flipped", "other-key", "other-device"])
def test_bad_per_device_wrapped_keys_are_refused_before_downloading(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    attack: str,
) -> None:
    """The per-device wrapped key is not signed. A flipped bit, a key the server made
    up (wrapped correctly, but not the signed key_id), or a key for another device:
    each is refused with a failure report, nothing is downloaded."""
    encryption = Encryption(chunk_size=CHUNK)
    artifact = make_encrypted_artifact(tmp_path / "artifacts", vendor_key, encryption)
    public = load_or_create_x25519_key(device.config.state_dir).public_key()
    wrapped = wrap_key(encryption.content_key, public)
    if attack == "flipped":
        last = f"{int(wrapped.wrapped[-1], 16) ^ 1:x}"
        wrapped = WrappedKey(wrapped.recipient, wrapped.ephemeral, wrapped.wrapped[:-1] + last)
        expected = "does not authenticate"
    elif attack == "other-key":
        wrapped = wrap_key(new_content_key(), public)
        expected = "is not the artifact's content key"
    else:
        wrapped = wrap_key(encryption.content_key, X25519PrivateKey.generate().public_key())
        expected = "no key to decrypt payload rootfs"
    slot_a = device.slot_bytes("a")
    _per_device_offer(api, artifact, wrapped)
    assert drive(device, api)[-1] is StepResult.FAILED
    assert expected in api.final["dep-1"].message
    assert api.sources == []
    _assert_untouched(device, slot_a, artifact.image)


@pytest.mark.parametrize("damage", ["flip", "swap", "truncate"])
def test_damaged_encrypted_member_fails_without_arming(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    group: tuple[X25519PrivateKey, Path],
    damage: str,
) -> None:
    """The artifact is damaged on the server: a flipped bit in chunk 20, chunks 10
    and 11 swapped, or the member cut short. The device stops at the first chunk
    that fails its tag (or at the missing end), reports failure and stays on slot A;
    slot B holds nothing but plaintext from chunks that verified."""
    key, key_file = group
    _with_group_key(device, key_file)
    artifact = _group_artifact(tmp_path, vendor_key, key)
    start, size = _member_span(artifact)
    full = CHUNK + TAG_SIZE
    api.offer(artifact)  # the server's record: the artifact's original size
    data = bytearray(artifact.path.read_bytes())
    if damage == "flip":
        data[start + 20 * full + 5] ^= 0x01
    elif damage == "swap":
        ten, eleven = start + 10 * full, start + 11 * full
        data[ten : ten + 2 * full] = data[eleven : eleven + full] + data[ten : ten + full]
    else:
        del data[start + size - full // 2 :]
    artifact.path.write_bytes(bytes(data))
    slot_a = device.slot_bytes("a")
    assert drive(device, api)[-1] is StepResult.FAILED
    message = api.final["dep-1"].message
    assert ("does not authenticate" in message) or ("truncated" in message)
    _assert_untouched(device, slot_a, artifact.image)


def test_interrupted_encrypted_download_resumes(
    device: SimulatedDevice,
    api: FakeApi,
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
    group: tuple[X25519PrivateKey, Path],
) -> None:
    """The connection drops after 1.5 MiB of a 2 MiB encrypted image: the next step
    resumes at the chunk holding the last journaled frame boundary (not at byte 0),
    and the installed image is exact."""
    key, key_file = group
    _with_group_key(device, key_file)
    artifact = _group_artifact(tmp_path, vendor_key, key)
    api.offer(artifact)
    api.fail_download_after = 1536 * 1024
    results = drive(device, api)
    assert StepResult.RETRY in results and results[-1] is StepResult.UPDATED
    first, second = api.sources[0], api.sources[1]
    assert first.opened == [0]
    start, _ = _member_span(artifact)
    resumed_at = second.opened[0]
    assert resumed_at > start and (resumed_at - start) % (CHUNK + TAG_SIZE) == 0
    assert second.bytes_served < artifact.path.stat().st_size - 512 * 1024
    assert device.slot_bytes("b") == artifact.image


def test_power_cut_during_a_per_device_download_resumes_from_the_journal(
    device: SimulatedDevice, api: FakeApi, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """The power fails after the second checkpoint of a per-device encrypted download.
    The fresh agent reads the journaled offer (wrapped key included) and its resume
    point, unwraps the key again with its key file, resumes at a chunk boundary, and
    installs the exact image."""
    encryption = Encryption(chunk_size=CHUNK)
    artifact = make_encrypted_artifact(
        tmp_path / "artifacts", vendor_key, encryption, image=secret_image("1.1.0", 3 * MiB)
    )
    public = load_or_create_x25519_key(device.config.state_dir).public_key()
    _per_device_offer(api, artifact, wrap_key(encryption.content_key, public))
    with pytest.raises(PowerCut):
        drive(device, api, hook=CutAt("checkpoint", nth=2))
    device.power_cycle()
    assert drive(device, api)[-1] is StepResult.UPDATED
    start, _ = _member_span(artifact)
    resumed_at = api.sources[-1].opened[0]
    assert resumed_at > start and (resumed_at - start) % (CHUNK + TAG_SIZE) == 0
    assert device.slot_bytes("b") == artifact.image


def test_unreadable_group_key_is_a_configuration_error(
    device: SimulatedDevice, tmp_path: Path
) -> None:
    """A decryption_keys entry that is not an X25519 private key stops the agent
    with a message naming the file (as a bad trusted key does)."""
    from fleetcast.agent import Agent
    from fleetcast.exceptions import UsageError

    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    _with_group_key(device, bad)
    with pytest.raises(UsageError, match=r"bad\.key"):
        Agent(device.config, client=FakeApi())
