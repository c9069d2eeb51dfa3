"""Every error, whatever raised it, has the same JSON shape."""

from __future__ import annotations

from typing import Any

import httpx

from fleetcast.exceptions import ApiError, FleetcastError
from fleetcast.server import errors
from tests.factories import BuiltArtifact
from tests.server.harness import BASE, Server


def _assert_shape(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error["details"] is None or isinstance(error["details"], dict)
    return dict(error)


async def test_one_error_shape_everywhere(server: Server, artifact: BuiltArtifact) -> None:
    """Unknown route, wrong method, bad body, no token, conflict, domain error, crash."""
    [device] = await server.fleet(1)
    uploaded = await server.upload(artifact)

    _assert_shape(await server.admin.get("/api/v1/no-such-thing"), 404, "not_found")
    _assert_shape(await server.admin.delete("/api/v1/devices"), 405, "method_not_allowed")
    invalid = _assert_shape(
        await server.admin.post("/api/v1/deployments", json={"name": 5}), 422, "validation_error"
    )
    assert {f["field"] for f in invalid["details"]["fields"]} >= {
        "body.name",
        "body.artifact_id",
        "body.target",
    }
    _assert_shape(await server.http.get("/api/v1/artifacts"), 401, "unauthorized")
    _assert_shape(await device.auth(signature="00"), 401, "bad_signature")
    duplicate = await server.admin.post(
        "/api/v1/artifacts",
        content=artifact.path.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    _assert_shape(duplicate, 409, "conflict")
    missing = _assert_shape(await server.admin.get("/api/v1/devices/nope"), 404, "not_found")
    assert missing["details"] == {"device_id": "nope"}
    _assert_shape(await device.report("nope", "success"), 404, "not_found")
    not_json = await server.admin.post(
        "/api/v1/deployments", content=b"{", headers={"Content-Type": "application/json"}
    )
    _assert_shape(not_json, 422, "validation_error")
    assert uploaded["id"]

    async def boom() -> None:
        raise RuntimeError("secret internals")

    server.app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=server.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        crashed = _assert_shape(await client.get("/boom"), 500, "internal_error")
    assert "secret" not in crashed["message"]


def test_every_domain_error_maps_to_a_status_and_code() -> None:
    """Each server error is an ApiError (so in the Fleetcast tree) with a distinct code."""
    classes = [getattr(errors, name) for name in errors.__all__]
    codes = {}
    for cls in classes:
        assert issubclass(cls, ApiError) and issubclass(cls, FleetcastError)
        instance = cls("message")
        assert 400 <= instance.status_code < 600
        assert instance.code.islower() and " " not in instance.code
        codes.setdefault(instance.code, []).append(cls.__name__)
    assert codes["not_found"] == ["NotFoundError"]
    assert {"device_pending", "bad_signature", "key_mismatch", "stale_request"} <= set(codes)
    assert {"status_conflict", "deployment_aborted", "invalid_artifact"} <= set(codes)
