"""Artifact upload: only complete, untampered, properly signed artifacts are stored."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.artifact import ArtifactReader
from fleetcast.artifact._format import write_artifact
from fleetcast.core.manifest import SignedManifest
from fleetcast.core.signing import key_id, public_key_to_pem
from fleetcast.server import Settings
from tests.factories import BuiltArtifact, make_artifact
from tests.server.harness import Server, running_server


async def _post(server: Server, data: bytes) -> tuple[int, dict[str, object]]:
    response = await server.admin.post(
        "/api/v1/artifacts", content=data, headers={"Content-Type": "application/octet-stream"}
    )
    return response.status_code, response.json()


def _blob_files(settings: Settings) -> list[Path]:
    root = settings.resolved_blob_dir
    return [p for p in root.rglob("*") if p.is_file() and p.parent.name != "tmp"]


async def test_upload_list_get_download_delete(
    server: Server, artifact: BuiltArtifact, vendor_key: Ed25519PrivateKey
) -> None:
    """An operator uploads a signed artifact, sees it listed, and deletes it when unused."""
    created = await server.upload(artifact)
    data = artifact.path.read_bytes()
    assert created["name"] == "acme-fw" and created["version"] == "1.1.0"
    assert created["compatible"] == ["acme-gw"] and created["payload_type"] == "rootfs-image"
    assert created["size"] == len(data) and created["sha256"] == hashlib.sha256(data).hexdigest()
    assert created["signer_keyid"] == key_id(vendor_key.public_key())
    assert created["manifest"] == artifact.signed.to_dict()

    listed = (await server.admin.get("/api/v1/artifacts")).json()["items"]
    assert [a["id"] for a in listed] == [created["id"]]
    shown = await server.admin.get(f"/api/v1/artifacts/{created['id']}")
    assert shown.json() == created
    assert len(_blob_files(server.settings)) == 1

    deleted = await server.admin.delete(f"/api/v1/artifacts/{created['id']}")
    assert deleted.status_code == 204
    assert (await server.admin.get(f"/api/v1/artifacts/{created['id']}")).status_code == 404
    assert _blob_files(server.settings) == []


async def test_duplicate_name_and_version_is_409(server: Server, artifact: BuiltArtifact) -> None:
    first = await server.upload(artifact)
    status, body = await _post(server, artifact.path.read_bytes())
    assert status == 409 and body["error"]["code"] == "conflict"  # type: ignore[index]
    # The first artifact's file is untouched (same content, same blob).
    download = await server.admin.get(f"/api/v1/artifacts/{first['id']}/download")
    assert download.content == artifact.path.read_bytes()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: d[: len(d) // 2], id="truncated"),
        pytest.param(
            lambda d: d[: len(d) // 2] + bytes([d[len(d) // 2] ^ 0xFF]) + d[len(d) // 2 + 1 :],
            id="tampered",
        ),
        pytest.param(lambda d: b"this is not an artifact" * 100, id="garbage"),
        pytest.param(lambda d: b"", id="empty"),
    ],
)
async def test_broken_artifact_is_422_and_not_stored(
    server: Server, artifact: BuiltArtifact, damage: object
) -> None:
    status, body = await _post(server, damage(artifact.path.read_bytes()))  # type: ignore[operator]
    assert status == 422, body
    assert body["error"]["code"] == "invalid_artifact"  # type: ignore[index]
    assert (await server.admin.get("/api/v1/artifacts")).json()["items"] == []
    assert _blob_files(server.settings) == []


async def test_upload_over_the_size_limit_is_413(
    settings: Settings, admin_token: str, artifact: BuiltArtifact
) -> None:
    small = settings.model_copy(update={"max_artifact_size": 1000})
    async with running_server(small, admin_token) as server:
        status, body = await _post(server, artifact.path.read_bytes())
        assert status == 413 and body["error"]["code"] == "too_large"  # type: ignore[index]
        assert _blob_files(settings) == []


async def test_trusted_keys_refuse_other_signers(
    settings: Settings, admin_token: str, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """With trusted vendor keys configured, an artifact signed by another key is refused."""
    key_file = tmp_path / "vendor.pem"
    key_file.write_text(public_key_to_pem(vendor_key.public_key()))
    strict = settings.model_copy(update={"trusted_keys": [key_file]})
    stranger = Ed25519PrivateKey.generate()
    wrong = make_artifact(tmp_path / "wrong", stranger, version="6.6.6")
    right = make_artifact(tmp_path / "right", vendor_key, version="1.2.0")
    async with running_server(strict, admin_token) as server:
        status, body = await _post(server, wrong.path.read_bytes())
        assert status == 422
        assert body["error"]["details"]["reason"] == "signature"  # type: ignore[index]
        assert (await server.upload(right))["signer_keyid"] == key_id(vendor_key.public_key())


async def test_without_trusted_keys_any_signature_is_recorded(
    server: Server, tmp_path: Path
) -> None:
    """No trusted keys configured: structure and hashes are checked, the signer is recorded."""
    signer = Ed25519PrivateKey.generate()
    built = make_artifact(tmp_path / "any", signer, version="2.0.0")
    assert (await server.upload(built))["signer_keyid"] == key_id(signer.public_key())


async def test_unsigned_artifact_is_refused(server: Server, tmp_path: Path) -> None:
    """A manifest without signatures is refused even with no trusted keys configured."""
    built = make_artifact(tmp_path / "src", Ed25519PrivateKey.generate(), version="3.0.0")
    unsigned = SignedManifest(built.signed.manifest, (), built.signed.signed_bytes)
    payload = tmp_path / "payload.zst"
    with built.path.open("rb") as fh:
        reader = ArtifactReader(fh)
        reader.read_manifest()
        for _entry, stream in reader.payloads():
            payload.write_bytes(stream.read())
    out = tmp_path / "unsigned.fca"
    with out.open("wb") as fh:
        write_artifact(fh, unsigned, {"rootfs": payload})
    status, body = await _post(server, out.read_bytes())
    assert status == 422 and "not signed" in body["error"]["message"]  # type: ignore[index]


async def test_artifact_in_use_cannot_be_deleted(server: Server, artifact: BuiltArtifact) -> None:
    await server.fleet(1)
    uploaded = await server.upload(artifact)
    await server.deploy(uploaded["id"])
    response = await server.admin.delete(f"/api/v1/artifacts/{uploaded['id']}")
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"
