"""The Mender device API: what the Mender client sees, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from fleetcast.server.compat import mender_service
from tests.server.compat.helpers import MenderDevice, mender_artifact
from tests.server.harness import Server

IDENTITY = {"mac": "52:54:00:12:34:56"}


async def _upload(server: Server, data: bytes) -> dict[str, Any]:
    response = await server.admin.post("/api/v1/artifacts", content=data)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _accepted(server: Server, identity: dict[str, str] = IDENTITY, **kw: Any) -> MenderDevice:
    device = MenderDevice(server.http, identity, **kw)
    assert (await device.auth()).status_code == 401
    pending = (await server.admin.get("/api/v1/devices", params={"status": "pending"})).json()
    row = next(d for d in pending["items"] if d["identity"] == identity)
    await server.admin.post(f"/api/v1/devices/{row['id']}/accept")
    assert (await device.auth()).status_code == 200
    assert (
        await device.inventory({"device_type": "acme-mender", "artifact_name": "factory-1"})
    ).status_code == 200
    return device


async def _device_row(server: Server, identity: dict[str, str] = IDENTITY) -> dict[str, Any]:
    rows = (await server.admin.get("/api/v1/devices")).json()["items"]
    return next(d for d in rows if d["identity"] == identity)


@pytest.mark.parametrize("key_kind", ["rsa", "ecdsa", "ed25519"])
async def test_auth_pending_then_accepted_with_each_key_type(server: Server, key_kind: str) -> None:
    """The signed auth request creates a pending Mender device; once accepted, the same
    request returns a token as the plain body."""
    device = MenderDevice(server.http, IDENTITY, key_kind)
    response = await device.auth()
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "device_pending"
    row = await _device_row(server)
    assert (row["kind"], row["status"]) == ("mender", "pending")
    await server.admin.post(f"/api/v1/devices/{row['id']}/accept")
    response = await device.auth()
    assert response.status_code == 200 and response.text.startswith("mender:")


async def test_auth_refuses_bad_signatures_and_other_keys(server: Server) -> None:
    device = MenderDevice(server.http, IDENTITY)
    body = device.auth_body()
    response = await device.auth(body, signature=device.sign(body + b" "))
    assert response.status_code == 401 and response.json()["error"]["code"] == "bad_signature"
    assert (await device.auth(body, signature="not base64!")).status_code == 401
    assert (await device.auth()).status_code == 401  # now pending
    impostor = MenderDevice(server.http, IDENTITY)
    response = await impostor.auth()
    assert response.status_code == 401 and response.json()["error"]["code"] == "key_mismatch"
    garbage = await device.auth(b'{"id_data": "[]", "pubkey": "x"}')
    assert garbage.status_code == 422


async def test_tenant_token_is_an_enrollment_token(server: Server) -> None:
    """A Fleetcast enrollment token given as the client's TenantToken admits it at once."""
    response = await server.admin.post(
        "/api/v1/enrollment-tokens", json={"expires_in": 3600, "tags": ["mender"]}
    )
    device = MenderDevice(server.http, IDENTITY, tenant_token=response.json()["token"])
    assert (await device.auth()).status_code == 200
    row = await _device_row(server)
    assert row["status"] == "accepted" and row["tags"] == ["mender"]


async def test_preauthorized_key_is_accepted_on_first_contact(server: Server) -> None:
    device = MenderDevice(server.http, IDENTITY, "ecdsa")
    response = await server.admin.post(
        "/api/v1/devices/preauthorize",
        json={
            "kind": "mender",
            "identity": IDENTITY,
            "public_key": device.public_pem,
            "device_type": "acme-mender",
        },
    )
    assert response.status_code == 201 and response.json()["status"] == "preauthorized"
    assert (await device.auth()).status_code == 200
    missing_key = await server.admin.post(
        "/api/v1/devices/preauthorize",
        json={"kind": "mender", "identity": {"mac": "x"}, "device_type": "acme-mender"},
    )
    assert missing_key.status_code == 422


async def test_tokens_do_not_cross_protocols(server: Server) -> None:
    """A Mender token is refused by the native API and a native token by the Mender API."""
    mender = await _accepted(server)
    response = await server.http.get("/api/device/v1/next", headers=mender.headers)
    assert response.status_code == 401
    [native] = await server.fleet(1)
    response = await server.http.put(
        "/api/devices/v1/inventory/device/attributes", json=[], headers=native.headers
    )
    assert response.status_code == 401


async def test_inventory_put_and_patch(server: Server) -> None:
    device = await _accepted(server)
    response = await device.inventory({"kernel": "6.1", "interfaces": ["eth0", "wlan0"]}, "PATCH")
    assert response.status_code == 200
    row = await _device_row(server)
    assert row["attributes"] == {
        "device_type": "acme-mender",
        "artifact_name": "factory-1",
        "kernel": "6.1",
        "interfaces": ["eth0", "wlan0"],
    }
    assert (row["device_type"], row["artifact_name"]) == ("acme-mender", "factory-1")
    await device.inventory({"device_type": "acme-mender", "artifact_name": "factory-1"})
    assert (await _device_row(server))["attributes"] == {
        "device_type": "acme-mender",
        "artifact_name": "factory-1",
    }
    bad = await server.http.put(
        "/api/devices/v1/inventory/device/attributes", json={"a": 1}, headers=device.headers
    )
    assert bad.status_code == 422


async def test_next_download_status_and_history(server: Server) -> None:
    """Nothing to do is 204. A deployment is offered on every next endpoint with an
    expiring, self-authenticating, ranged download link; status reports are idempotent
    and land in the history; success sets the installed artifact."""
    device = await _accepted(server)
    provides = {"device_type": "acme-mender", "artifact_name": "factory-1"}
    assert (await device.next(provides)).status_code == 204
    data = mender_artifact("app-2.0")
    artifact = await _upload(server, data)
    assert (artifact["format"], artifact["name"], artifact["compatible"]) == (
        "mender",
        "app-2.0",
        ["acme-mender"],
    )
    assert artifact["details"]["payload_types"] == ["single-file"] and artifact["manifest"] is None
    deployment = await server.deploy(artifact["id"], target={"device_types": ["acme-mender"]})

    offer = (await device.next(provides)).json()
    v1_get = await server.http.get(
        "/api/devices/v1/deployments/device/deployments/next",
        params=provides,
        headers=device.headers,
    )
    v1_post = await server.http.post(
        "/api/devices/v1/deployments/device/deployments/next", json=provides, headers=device.headers
    )
    assert v1_get.json()["id"] == v1_post.json()["id"] == offer["id"] == deployment["id"]
    assert offer["artifact"]["artifact_name"] == "app-2.0"
    assert offer["artifact"]["device_types_compatible"] == ["acme-mender"]
    uri = offer["artifact"]["source"]["uri"]
    assert uri.startswith("http://fleetcast.test/api/devices/v1/fleetcast/artifacts/")
    whole = await server.http.get(uri)  # no token: the link authorizes itself
    assert whole.status_code == 200 and whole.content == data
    part = await server.http.get(uri, headers={"Range": "bytes=512-"})
    assert part.status_code == 206 and part.content == data[512:]
    forged = uri.replace("signature=", "signature=0")
    assert (await server.http.get(forged)).status_code == 401

    for status in ("downloading", "downloading", "installing", "pause_before_committing"):
        assert (await device.status(deployment["id"], status)).status_code == 204
    assert (await device.status(deployment["id"], "success")).status_code == 204
    assert (await device.status(deployment["id"], "success")).status_code == 204
    bad = await device.status(deployment["id"], "dancing")
    assert bad.status_code == 422
    await server.wait_for_deployment(deployment["id"], lambda d: d["status"] == "completed")
    row = await _device_row(server)
    assert (row["artifact_name"], row["artifact_version"]) == ("app-2.0", "app-2.0")
    history = (await server.admin.get(f"/api/v1/devices/{row['id']}/history")).json()["items"]
    assert [e["state"] for e in history if e["kind"] == "status"] == [
        "downloading",
        "installing",
        "success",
    ]
    assert (await device.next({**provides, "artifact_name": "app-2.0"})).status_code == 204


def test_download_links_expire() -> None:
    key = b"k" * 32
    expires = int(time.time()) - 1
    signature = mender_service.download_token(key, "a", "d", expires)
    assert signature != mender_service.download_token(key, "a", "e", expires)
    assert signature != mender_service.download_token(key, "b", "d", expires)


async def test_expired_download_link_is_refused(server: Server) -> None:
    device = await _accepted(server)
    artifact = await _upload(server, mender_artifact("app-2.0"))
    await server.deploy(artifact["id"], target={"device_types": ["acme-mender"]})
    uri = (await device.next({"device_type": "acme-mender"})).json()["artifact"]["source"]["uri"]
    query = parse_qs(urlparse(uri).query)
    expired = int(query["expires"][0]) - 10**6
    signature = mender_service.download_token(
        server.state.admission.signer.key, artifact["id"], query["device"][0], expired
    )
    stale = (
        uri.split("?")[0] + f"?device={query['device'][0]}&expires={expired}&signature={signature}"
    )
    response = await server.http.get(stale)
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]


async def test_failure_log_and_threshold(server: Server) -> None:
    """A failure report pauses a strict phase; the log uploaded after it joins the history."""
    device = await _accepted(server)
    artifact = await _upload(server, mender_artifact("app-2.0"))
    deployment = await server.deploy(
        artifact["id"],
        target={"device_types": ["acme-mender"]},
        phases=[{"percent": 100, "max_failure_percent": 0}],
    )
    await device.status(deployment["id"], "downloading")
    assert (await device.status(deployment["id"], "failure")).status_code == 204
    assert (await device.log(deployment["id"], ["module exited 2"])).status_code == 204
    assert (await device.log(deployment["id"], ["module exited 2"])).status_code == 204
    await server.wait_for_deployment(deployment["id"], lambda d: d["status"] == "paused")
    row = await _device_row(server)
    history = (await server.admin.get(f"/api/v1/devices/{row['id']}/history")).json()["items"]
    logs = [e for e in history if e["message"] == "deployment log"]
    assert len(logs) == 1 and logs[0]["log_tail"] == ["2026-11-27T00:00:00Z error module exited 2"]


async def test_aborted_deployment_is_409_and_the_device_stops(server: Server) -> None:
    """After an abort the client's reports get 409; its failure report (its reaction to
    the 409) marks it aborted, not failed; its log upload gets 409 too."""
    device = await _accepted(server)
    artifact = await _upload(server, mender_artifact("app-2.0"))
    deployment = await server.deploy(artifact["id"], target={"device_types": ["acme-mender"]})
    await device.status(deployment["id"], "downloading")
    await server.admin.post(f"/api/v1/deployments/{deployment['id']}/abort")
    response = await device.status(deployment["id"], "installing")
    assert response.status_code == 409 and response.json()["error"]["code"] == "deployment_aborted"
    assert (await device.status(deployment["id"], "failure")).status_code == 409
    assert (await device.log(deployment["id"], ["stopped"])).status_code == 409
    members = (await server.admin.get(f"/api/v1/deployments/{deployment['id']}/devices")).json()
    assert [m["state"] for m in members["items"]] == ["aborted"]
    assert (await device.status("no-such-deployment", "downloading")).status_code == 404


async def test_chunked_bodies_without_content_length(server: Server) -> None:
    """Bodies may arrive chunked (no Content-Length): auth, inventory and status still work."""
    device = MenderDevice(server.http, IDENTITY)
    await device.auth()
    await server.admin.post(f"/api/v1/devices/{(await _device_row(server))['id']}/accept")
    body = device.auth_body()

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 100):
            yield data[i : i + 100]

    response = await server.http.post(
        "/api/devices/v1/authentication/auth_requests",
        content=chunks(body),
        headers={"X-MEN-Signature": device.sign(body), "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    assert "content-length" not in response.request.headers
    device.token = response.text
    response = await server.http.put(
        "/api/devices/v1/inventory/device/attributes",
        content=chunks(b'[{"name": "device_type", "value": "acme-mender"}]'),
        headers=device.headers,
    )
    assert response.status_code == 200
    assert (await _device_row(server))["device_type"] == "acme-mender"


async def test_hostile_input_is_refused_not_crashed(server: Server) -> None:
    device = await _accepted(server)
    artifact = await _upload(server, mender_artifact("app-2.0"))
    deployment = await server.deploy(artifact["id"], target={"device_types": ["acme-mender"]})
    response = await server.http.put(
        f"/api/devices/v1/deployments/device/deployments/{deployment['id']}/status",
        json={"status": ["downloading"]},
        headers=device.headers,
    )
    assert response.status_code == 422
    uri = (await device.next({"device_type": "acme-mender"})).json()["artifact"]["source"]["uri"]
    forged = uri.split("signature=")[0] + "signature=%C3%A9"
    assert (await server.http.get(forged)).status_code == 401
    assert (await device.auth(b"\xff" * 10)).status_code == 422
