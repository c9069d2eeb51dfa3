"""Admission: how a device proves who it is and when it gets a token (``POST /auth``)."""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.server.services.credentials import DeviceTokenSigner
from tests.server.harness import Server


def _code(response: object) -> str:
    return str(response.json()["error"]["code"])  # type: ignore[attr-defined]


async def test_first_contact_is_pending_until_an_operator_accepts(server: Server) -> None:
    """A new device waits (401 device_pending); once accepted it gets a working token."""
    device = server.device("SN-1")
    first = await device.auth()
    assert first.status_code == 401 and _code(first) == "device_pending"
    device_id = first.json()["error"]["details"]["device_id"]

    pending = await server.admin.get("/api/v1/devices", params={"status": "pending"})
    assert [d["id"] for d in pending.json()["items"]] == [device_id]

    assert (await server.admin.post(f"/api/v1/devices/{device_id}/accept")).status_code == 200
    answer = await device.login()
    assert answer.device_id == device_id
    assert answer.expires_in == server.settings.device_token_ttl
    assert (await device.next()).status_code == 200


async def test_rejected_device_gets_403(server: Server) -> None:
    device = server.device("SN-1")
    device_id = (await device.auth()).json()["error"]["details"]["device_id"]
    await server.admin.post(f"/api/v1/devices/{device_id}/reject")
    response = await device.auth()
    assert response.status_code == 403 and _code(response) == "device_rejected"


async def test_preauthorized_device_is_accepted_on_first_contact(server: Server) -> None:
    """An operator registers identity and key beforehand; the device is in at once."""
    device = server.device("SN-PRE")
    response = await server.admin.post(
        "/api/v1/devices/preauthorize",
        json={
            "identity": device.identity,
            "public_key": device.public_pem,
            "device_type": "acme-gw",
        },
    )
    assert response.status_code == 201 and response.json()["status"] == "preauthorized"
    answer = await device.login()
    assert answer.device_id == response.json()["id"]
    shown = await server.admin.get(f"/api/v1/devices/{answer.device_id}")
    assert shown.json()["status"] == "accepted"


async def test_preauthorized_identity_with_another_key_is_refused(server: Server) -> None:
    device = server.device("SN-PRE")
    await server.admin.post(
        "/api/v1/devices/preauthorize",
        json={
            "identity": device.identity,
            "public_key": device.public_pem,
            "device_type": "acme-gw",
        },
    )
    impostor = server.device("SN-PRE")  # same identity, new key
    response = await impostor.auth()
    assert response.status_code == 401 and _code(response) == "key_mismatch"


async def test_enrollment_token_admits_and_tags(server: Server) -> None:
    """A device presenting a valid enrollment token is accepted with the token's tags."""
    created = await server.admin.post(
        "/api/v1/enrollment-tokens", json={"expires_in": 600, "tags": ["lab", "eu"]}
    )
    assert created.status_code == 201
    device = server.device("SN-ENROL")
    answer = await device.login(enrollment_token=created.json()["token"])
    shown = (await server.admin.get(f"/api/v1/devices/{answer.device_id}")).json()
    assert shown["status"] == "accepted" and shown["tags"] == ["eu", "lab"]


async def test_unknown_enrollment_token_leaves_device_pending(server: Server) -> None:
    response = await server.device("SN-X").auth(enrollment_token="fce_not-a-token")
    assert response.status_code == 401 and _code(response) == "device_pending"


async def test_bad_signature(server: Server) -> None:
    """A signature by another key, a garbage signature or none at all: 401 bad_signature."""
    device = server.device("SN-1")
    body = device.auth_body()
    other = Ed25519PrivateKey.generate().sign(body).hex()
    for signature in (other, "zz", ""):
        response = await device.auth(body, signature=signature)
        assert response.status_code == 401, signature
        assert _code(response) == "bad_signature"


async def test_tampered_body_fails_signature(server: Server) -> None:
    device = server.device("SN-1")
    body = device.auth_body()
    signature = device.key.sign(body).hex()
    response = await device.auth(body.replace(b"SN-1", b"SN-2"), signature=signature)
    assert _code(response) == "bad_signature"


async def test_stale_timestamp_is_refused(server: Server) -> None:
    """A request older than the allowed clock skew cannot be replayed."""
    device = server.device("SN-1")
    response = await device.auth(timestamp=int(time.time()) - 3600)
    assert response.status_code == 401 and _code(response) == "stale_request"


async def test_known_identity_with_another_key(server: Server) -> None:
    [device] = await server.fleet(1)
    impostor = server.device(device.identity["serial"])
    response = await impostor.auth()
    assert response.status_code == 401 and _code(response) == "key_mismatch"


async def test_malformed_auth_body_is_422(server: Server) -> None:
    device = server.device("SN-1")
    response = await device.auth(b'{"identity": {}, "device_type": ""}')
    assert response.status_code == 422 and _code(response) == "validation_error"
    fields = {f["field"] for f in response.json()["error"]["details"]["fields"]}
    assert {"body.identity", "body.device_type", "body.public_key", "body.timestamp"} <= fields
    not_a_key = await device.auth(public_pem="not a pem")
    assert not_a_key.status_code == 422


async def test_decommission_after_token_gives_403(server: Server) -> None:
    """A device decommissioned after it got a token is refused on its next request."""
    [device] = await server.fleet(1)
    assert (await device.next()).status_code == 200
    await server.admin.post(f"/api/v1/devices/{device.device_id}/decommission")
    response = await device.next()
    assert response.status_code == 403 and _code(response) == "device_rejected"
    again = await device.auth()
    assert again.status_code == 403
    accept = await server.admin.post(f"/api/v1/devices/{device.device_id}/accept")
    assert accept.status_code == 409  # decommissioning is final


async def test_expired_and_garbage_tokens_are_401(server: Server) -> None:
    """The agent re-authenticates on 401 unauthorized."""
    [device] = await server.fleet(1)
    signer: DeviceTokenSigner = server.state.admission.signer
    assert device.device_id is not None
    expired = signer.issue(device.device_id, 60, now=time.time() - 120)
    forged = DeviceTokenSigner(b"k" * 32).issue(device.device_id, 3600)
    for token in (expired, forged, "garbage", f"{device.device_id}.x.y"):
        device.token = token
        response = await device.next()
        assert response.status_code == 401, token
        assert _code(response) == "unauthorized"
    device.token = None
    response = await server.http.get("/api/device/v1/next")
    assert response.status_code == 401 and _code(response) == "unauthorized"
    # Not ASCII (superscript digits, an accent): still a 401, never a 500.
    for odd in (f"{device.device_id}.\u00b2\u00b3.y", f"{device.device_id}.1.\u00e9"):
        header = ("Bearer " + odd).encode("latin-1")
        response = await server.http.get("/api/device/v1/next", headers={"Authorization": header})
        assert response.status_code == 401 and _code(response) == "unauthorized", odd


async def test_management_api_needs_the_admin_token(server: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = await server.http.get("/api/v1/devices", headers=headers)
        assert response.status_code == 401 and _code(response) == "unauthorized"
    [device] = await server.fleet(1)
    # A device token is not an admin token.
    response = await server.http.get("/api/v1/devices", headers=device.headers)
    assert response.status_code == 401
