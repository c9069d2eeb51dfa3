"""Artifact files in S3-compatible storage: devices are sent to presigned URLs.

The S3 server is moto's server mode (an S3 API emulator) on loopback, started
by the test; the server talks to it with boto3 exactly as it would to AWS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetcast.server import Settings, prepare
from fleetcast.server.s3blobs import parse_bucket_url
from fleetcast.sim.server import free_port
from tests.factories import BuiltArtifact
from tests.server.harness import running_server
from tests.services import S3Server, s3_server


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    with s3_server(monkeypatch) as server:
        yield server


def s3_settings(tmp_path: Path, s3: S3Server, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        blob_store=f"s3://{s3.bucket}/blobs",
        s3_endpoint_url=s3.endpoint_url,
        engine_interval=0.05,
        presign_expiry=60,
        **extra,
    )


def test_bucket_urls() -> None:
    assert parse_bucket_url("s3://fw") == ("fw", "")
    assert parse_bucket_url("s3://fw/a/b/") == ("fw", "a/b/")


async def test_a_device_downloads_from_a_presigned_url_with_ranges(
    tmp_path: Path, s3: S3Server, artifact: BuiltArtifact
) -> None:
    """The upload lands in the bucket; the device's download request is answered with
    a 307 to a presigned URL, which serves the whole file and byte ranges (resume)
    without the server; deleting the artifact deletes the object."""
    settings = s3_settings(tmp_path, s3)
    token = await asyncio.to_thread(prepare, settings)
    assert token is not None
    data = artifact.path.read_bytes()
    async with running_server(settings, token) as server:
        uploaded = await server.upload(artifact)
        sha = uploaded["sha256"]
        listing: Any = s3.client().list_objects_v2(Bucket=s3.bucket)  # type: ignore[attr-defined]
        assert [o["Key"] for o in listing["Contents"]] == [f"blobs/{sha[:2]}/{sha}"]
        assert not (tmp_path / "data" / "blobs" / sha[:2] / sha).exists()

        (device,) = await server.fleet(1)
        deployment = await server.deploy(uploaded["id"])
        offer = await device.offer()
        assert offer is not None
        response = await device.get(offer.download_url.removeprefix("/api/device/v1"))
        assert response.status_code == 307
        assert response.headers["cache-control"] == "no-store"
        location = response.headers["location"]
        assert location.startswith(s3.endpoint_url)
        assert "X-Amz-Expires=60" in location

        async with httpx.AsyncClient() as plain:
            whole = await plain.get(location)
            assert whole.status_code == 200
            assert whole.content == data
            part = await plain.get(location, headers={"Range": "bytes=100-"})
            assert part.status_code == 206
            assert part.headers["content-range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
            assert part.content == data[100:]

        # The management API's download redirects the same way.
        admin_download = await server.admin.get(f"/api/v1/artifacts/{uploaded['id']}/download")
        assert admin_download.status_code == 307

        await device.install(deployment["id"])
        await server.wait_for_deployment(deployment["id"], lambda d: d["status"] == "completed")


async def test_deleting_an_artifact_deletes_its_object(
    tmp_path: Path, s3: S3Server, artifact: BuiltArtifact
) -> None:
    settings = s3_settings(tmp_path, s3)
    token = await asyncio.to_thread(prepare, settings)
    assert token is not None
    async with running_server(settings, token) as server:
        uploaded = await server.upload(artifact)
        response = await server.admin.delete(f"/api/v1/artifacts/{uploaded['id']}")
        assert response.status_code == 204
        listing: Any = s3.client().list_objects_v2(Bucket=s3.bucket)  # type: ignore[attr-defined]
        assert listing.get("Contents", []) == []


async def test_an_unreachable_object_store_is_a_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, artifact: BuiltArtifact
) -> None:
    """Nothing listens on the endpoint: the upload is refused with the one error shape."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings(
        data_dir=tmp_path / "data",
        blob_store="s3://nowhere",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
    )
    token = await asyncio.to_thread(prepare, settings)
    assert token is not None
    async with running_server(settings, token) as server:
        response = await server.admin.post(
            "/api/v1/artifacts",
            content=artifact.path.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "storage_unavailable"
