"""Management API tokens and their scopes: read-only reads, operator operates, admin manages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from fleetcast.server.services.credentials import TokenScope
from tests.factories import BuiltArtifact
from tests.server.harness import BASE, Server


async def _new_token(server: Server, scope: str, name: str | None = None) -> dict[str, Any]:
    response = await server.admin.post(
        "/api/v1/tokens", json={"name": name or f"{scope} token", "scope": scope}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@asynccontextmanager
async def _client(server: Server, token: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=server.app)
    async with httpx.AsyncClient(
        transport=transport, base_url=BASE, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield client


def _forbidden(response: httpx.Response, required: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    assert error["details"]["required"] == required


async def test_create_token_and_read_own_scope(server: Server) -> None:
    created = await _new_token(server, "read-only", "wall screen")
    assert created["token"].startswith("fca_")
    assert created["scope"] == "read-only" and created["name"] == "wall screen"
    async with _client(server, created["token"]) as viewer:
        me = (await viewer.get("/api/v1/tokens/me")).json()
    assert me == {k: created[k] for k in ("id", "name", "scope", "created_at")}
    first = (await server.admin.get("/api/v1/tokens/me")).json()
    assert first["scope"] == "admin" and first["name"] == "initial admin token"

    listed = (await server.admin.get("/api/v1/tokens")).json()["items"]
    assert [(t["name"], t["scope"]) for t in listed] == [
        ("initial admin token", "admin"),
        ("wall screen", "read-only"),
    ]
    assert all("token" not in t for t in listed), "a token's plaintext is shown once only"
    bad = await server.admin.post("/api/v1/tokens", json={"name": "x", "scope": "root"})
    assert bad.status_code == 422


async def test_read_only_token_reads_but_cannot_change(
    server: Server, artifact: BuiltArtifact
) -> None:
    [device] = await server.fleet(1)
    uploaded = await server.upload(artifact)
    deployment = await server.deploy(uploaded["id"])
    viewer = await _new_token(server, "read-only")
    async with _client(server, viewer["token"]) as client:
        for path in (
            "/api/v1/devices",
            f"/api/v1/devices/{device.device_id}",
            f"/api/v1/devices/{device.device_id}/history",
            "/api/v1/artifacts",
            f"/api/v1/deployments/{deployment['id']}",
            f"/api/v1/deployments/{deployment['id']}/devices",
            "/api/v1/fleet/summary",
            "/api/v1/events",
        ):
            assert (await client.get(path)).status_code == 200, path
        for response in (
            await client.post(f"/api/v1/devices/{device.device_id}/reject"),
            await client.put(f"/api/v1/devices/{device.device_id}/tags", json={"tags": ["x"]}),
            await client.post(
                "/api/v1/artifacts",
                content=artifact.path.read_bytes(),
                headers={"Content-Type": "application/octet-stream"},
            ),
            await client.delete(f"/api/v1/artifacts/{uploaded['id']}"),
            await client.post(f"/api/v1/deployments/{deployment['id']}/pause"),
            await client.post("/api/v1/enrollment-tokens", json={}),
        ):
            _forbidden(response, "operator")
        new_token = {"name": "x", "scope": "admin"}
        _forbidden(await client.post("/api/v1/tokens", json=new_token), "operator")
        _forbidden(await client.get("/api/v1/tokens"), "admin")
    # Nothing changed.
    shown = (await server.admin.get(f"/api/v1/devices/{device.device_id}")).json()
    assert shown["status"] == "accepted" and shown["tags"] == []
    assert (await server.deployment(deployment["id"]))["status"] == "running"


async def test_operator_operates_but_does_not_manage_tokens(
    server: Server, artifact: BuiltArtifact
) -> None:
    await server.fleet(1)
    operator = await _new_token(server, "operator")
    async with _client(server, operator["token"]) as client:
        uploaded = await client.post(
            "/api/v1/artifacts",
            content=artifact.path.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert uploaded.status_code == 201, uploaded.text
        created = await client.post(
            "/api/v1/deployments",
            json={
                "name": "by an operator",
                "artifact_id": uploaded.json()["id"],
                "target": {"device_types": ["acme-gw"]},
            },
        )
        assert created.status_code == 201, created.text
        assert (await client.post("/api/v1/enrollment-tokens", json={})).status_code == 201
        new_token = {"name": "x", "scope": "admin"}
        _forbidden(await client.post("/api/v1/tokens", json=new_token), "admin")
        _forbidden(await client.get("/api/v1/tokens"), "admin")
        _forbidden(await client.delete(f"/api/v1/tokens/{operator['id']}"), "admin")
        assert (await client.get("/api/v1/tokens/me")).json()["scope"] == "operator"


async def test_revoked_token_stops_working_and_the_last_admin_stays(server: Server) -> None:
    viewer = await _new_token(server, "read-only")
    me = (await server.admin.get("/api/v1/tokens/me")).json()
    last = await server.admin.delete(f"/api/v1/tokens/{me['id']}")
    assert last.status_code == 409 and last.json()["error"]["code"] == "conflict"

    assert (await server.admin.delete(f"/api/v1/tokens/{viewer['id']}")).status_code == 204
    async with _client(server, viewer["token"]) as client:
        gone = await client.get("/api/v1/devices")
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "unauthorized"
    assert (await server.admin.delete(f"/api/v1/tokens/{viewer['id']}")).status_code == 404

    # With a second admin token, the first can go.
    second = await _new_token(server, "admin")
    async with _client(server, second["token"]) as client:
        assert (await client.delete(f"/api/v1/tokens/{me['id']}")).status_code == 204
    assert (await server.admin.get("/api/v1/devices")).status_code == 401


@pytest.mark.parametrize(
    ("scope", "allowed"),
    [
        (TokenScope.READ_ONLY, {TokenScope.READ_ONLY}),
        (TokenScope.OPERATOR, {TokenScope.READ_ONLY, TokenScope.OPERATOR}),
        (TokenScope.ADMIN, set(TokenScope)),
    ],
)
def test_scopes_are_ordered(scope: TokenScope, allowed: set[TokenScope]) -> None:
    from fleetcast.server.db.models import AdminToken
    from fleetcast.server.errors import ForbiddenError
    from fleetcast.server.services.credentials import require_scope

    token = AdminToken(id="t", token_hash="h", name="t", scope=scope.value)
    for needed in TokenScope:
        if needed in allowed:
            require_scope(token, needed)
        else:
            with pytest.raises(ForbiddenError):
                require_scope(token, needed)
    unknown = AdminToken(id="u", token_hash="h", name="u", scope="superuser")
    with pytest.raises(ForbiddenError):
        require_scope(unknown, TokenScope.OPERATOR)
