"""Encrypted artifacts on the server (ADR 0008): the per-device content key is kept
sealed outside the blob store, wrapped into each device's offer, and never logged;
encrypted images get no deltas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import select

from fleetcast.artifact import ArtifactReader, Encryption
from fleetcast.core.envelope import new_content_key, unwrap_key, x25519_raw
from fleetcast.core.wire import Inventory
from fleetcast.server import Settings
from fleetcast.server.db.models import ArtifactKey, Delta
from fleetcast.server.services.content_keys import KEK_FILE, X25519_ATTRIBUTE
from tests.encrypted import MARKER, make_encrypted_artifact, secret_image
from tests.factories import BuiltArtifact, make_artifact
from tests.server.harness import Server, SimDevice

ENGINES = {"fleetcast_delta_engines": "hdiffpatch,zstd"}


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        engine_interval=0.05,
        max_long_poll=10,
        delta_interval=0.05,
        delta_wait=60,  # were a delta wanted, the offer would be withheld: it must not be
    )


@pytest.fixture
def per_device(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> tuple[BuiltArtifact, bytes]:
    encryption = Encryption(chunk_size=8192)
    artifact = make_encrypted_artifact(tmp_path / "artifacts", vendor_key, encryption)
    return artifact, encryption.content_key


async def _put_key(server: Server, artifact_id: str, key: bytes) -> Any:
    return await server.admin.put(
        f"/api/v1/artifacts/{artifact_id}/content-key",
        content=key,
        headers={"Content-Type": "application/octet-stream"},
    )


async def _inventory(device: SimDevice, version: str, attributes: dict[str, str]) -> None:
    response = await device.send_inventory(Inventory("acme-gw", "acme-fw", version, attributes))
    assert response.status_code == 204, response.text


async def test_per_device_key_is_sealed_wrapped_per_device_and_never_logged(
    server: Server, per_device: tuple[BuiltArtifact, bytes]
) -> None:
    """The operator uploads an artifact built with --encrypt-for-devices and its
    content key. A device that reports its X25519 key gets an offer carrying the key
    wrapped for it, the same bytes on every poll (stable ETag); a device that reports
    none gets no wrapped key. The server keeps the key only sealed with the key file in
    its data directory; neither the blobs, the database row nor the audit log hold it."""
    artifact, key = per_device
    uploaded = await server.upload(artifact)
    response = await _put_key(server, uploaded["id"], key)
    assert response.status_code == 204, response.text
    assert (await _put_key(server, uploaded["id"], key)).status_code == 204  # idempotent

    with_key, without_key = await server.fleet(2)
    device_key = X25519PrivateKey.generate()
    attribute = {X25519_ATTRIBUTE: x25519_raw(device_key.public_key()).hex()}
    await _inventory(with_key, "1.0.0", attribute)
    await _inventory(without_key, "1.0.0", {})
    await server.deploy(uploaded["id"])

    offer = await with_key.offer()
    assert offer is not None and offer.wrapped_key is not None
    assert unwrap_key(offer.wrapped_key, device_key) == key
    first, second = await with_key.next(), await with_key.next()
    assert first.headers["etag"] == second.headers["etag"]
    plain_offer = await without_key.offer()
    assert plain_offer is not None and plain_offer.wrapped_key is None

    kek = server.settings.data_dir / KEK_FILE
    assert kek.stat().st_mode & 0o777 == 0o600
    async with server.state.db.sessions() as session:
        row = (await session.scalars(select(ArtifactKey))).one()
    assert row.artifact_id == uploaded["id"] and key.hex() not in row.sealed
    for blob in server.settings.resolved_blob_dir.rglob("*"):
        if blob.is_file():
            assert key not in blob.read_bytes() and key.hex().encode() not in blob.read_bytes()
            assert MARKER not in blob.read_bytes()
    audit = (await server.admin.get("/api/v1/audit")).json()["items"]
    assert "artifacts.put_content_key" in [e["action"] for e in audit]
    assert key.hex() not in str(audit)


async def test_wrong_keys_and_bad_requests_are_refused(
    server: Server,
    per_device: tuple[BuiltArtifact, bytes],
    tmp_path: Path,
    vendor_key: Ed25519PrivateKey,
) -> None:
    """Another artifact's key, a key of the wrong length, a key for an artifact that is
    not encrypted, and a key for no artifact: each a 4xx in the one error shape, and
    nothing stored."""
    artifact, _ = per_device
    uploaded = await server.upload(artifact)
    wrong = await _put_key(server, uploaded["id"], new_content_key())
    assert wrong.status_code == 422
    assert wrong.json()["error"]["code"] == "validation_error"
    assert "not the content key" in wrong.json()["error"]["message"]
    short = await _put_key(server, uploaded["id"], b"\x00" * 31)
    assert short.status_code == 422 and short.json()["error"]["code"] == "validation_error"
    plain = await server.upload(make_artifact(tmp_path / "plain", vendor_key, version="2.0.0"))
    unencrypted = await _put_key(server, plain["id"], new_content_key())
    assert unencrypted.status_code == 422
    assert "no encrypted payload" in unencrypted.json()["error"]["message"]
    missing = await _put_key(server, "no-such-artifact", new_content_key())
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    async with server.state.db.sessions() as session:
        assert (await session.scalars(select(ArtifactKey))).all() == []


async def test_group_encrypted_upload_is_checked_without_any_key(
    server: Server, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """The server holds no group key: it verifies the signed manifest and each
    encrypted member's size and sha256, and refuses a tampered member."""
    group = X25519PrivateKey.generate()
    encryption = Encryption(recipients=(group.public_key(),))
    good = make_encrypted_artifact(tmp_path / "good", vendor_key, encryption, version="1.1.0")
    assert (await server.upload(good))["version"] == "1.1.0"

    bad = make_encrypted_artifact(tmp_path / "bad", vendor_key, encryption, version="1.2.0")
    with bad.path.open("rb") as fh:
        reader = ArtifactReader(fh)
        reader.read_manifest()
        entry, _ = next(reader.payloads())
    data = bytearray(bad.path.read_bytes())
    data[entry.data_offset + 100] ^= 1
    response = await server.admin.post(
        "/api/v1/artifacts",
        content=bytes(data),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_artifact"


async def test_no_delta_for_encrypted_images(
    server: Server, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """A device on 1.0.0 that can apply deltas is offered encrypted 1.1.0 at once, as
    the full artifact: the server cannot read the image, so it neither waits for nor
    queues a delta."""
    directory = tmp_path / "artifacts"
    image = secret_image("1.0.0", 200_000)
    await server.upload(make_artifact(directory, vendor_key, version="1.0.0", image=image))
    changed = image[:100_000] + secret_image("1.1.0", 100_000)
    encrypted = make_encrypted_artifact(
        directory,
        vendor_key,
        Encryption(recipients=(X25519PrivateKey.generate().public_key(),)),
        version="1.1.0",
        image=changed,
    )
    uploaded = await server.upload(encrypted)
    (device,) = await server.fleet(1)
    await _inventory(device, "1.0.0", ENGINES)
    await server.deploy(uploaded["id"])
    offer = await device.offer()
    assert offer is not None and offer.delta is None
    async with server.state.db.sessions() as session:
        assert (await session.scalars(select(Delta))).all() == []


async def test_deleting_the_artifact_deletes_its_key(
    server: Server, per_device: tuple[BuiltArtifact, bytes]
) -> None:
    artifact, key = per_device
    uploaded = await server.upload(artifact)
    assert (await _put_key(server, uploaded["id"], key)).status_code == 204
    assert (await server.admin.delete(f"/api/v1/artifacts/{uploaded['id']}")).status_code == 204
    async with server.state.db.sessions() as session:
        assert (await session.scalars(select(ArtifactKey))).all() == []
