"""Behind nginx with ``accel_redirect_prefix``: the server authorises, nginx sends the bytes."""

from __future__ import annotations

from tests.factories import BuiltArtifact
from tests.server.harness import Server


async def test_downloads_answer_with_x_accel_redirect(
    server: Server, artifact: BuiltArtifact
) -> None:
    server.settings.accel_redirect_prefix = "/_fleetcast_blobs"
    uploaded = await server.upload(artifact)
    (device,) = await server.fleet(1)
    await server.deploy(uploaded["id"])
    offer = await device.offer()
    assert offer is not None
    response = await device.get(offer.download_url.removeprefix("/api/device/v1"))
    sha = uploaded["sha256"]
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["x-accel-redirect"] == f"/_fleetcast_blobs/{sha[:2]}/{sha}"
    assert response.headers["etag"] == f'"{sha}"'
    assert response.headers["content-type"] == "application/octet-stream"

    # Authorisation still happens here: no token, no redirect.
    anonymous = await server.http.get(offer.download_url)
    assert anonymous.status_code == 401
    assert "x-accel-redirect" not in anonymous.headers
