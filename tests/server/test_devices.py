"""Management of devices: listing and filtering, tags, history."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import BuiltArtifact
from tests.server.harness import Server


async def test_list_filters_and_pages(server: Server) -> None:
    lab = await server.fleet(3, tags=("lab",), prefix="LAB")
    await server.fleet(2, device_type="other-gw", prefix="OTH")
    await server.device("SN-WAITING").auth()

    async def ids(**params: object) -> tuple[set[str], int]:
        page = (await server.admin.get("/api/v1/devices", params=params)).json()
        return {d["id"] for d in page["items"]}, page["total"]

    assert (await ids())[1] == 6
    assert (await ids(status="pending"))[1] == 1
    assert (await ids(status="accepted"))[1] == 5
    assert (await ids(device_type="other-gw"))[1] == 2
    assert (await ids(tag="lab"))[0] == {d.device_id for d in lab}
    assert (await ids(q="WAITING"))[1] == 1
    first, total = await ids(limit=4)
    second, _ = await ids(limit=4, offset=4)
    assert total == 6 and len(first) == 4 and len(second) == 2 and not first & second
    bad = await server.admin.get("/api/v1/devices", params={"status": "sleepy"})
    assert bad.status_code == 422


async def test_device_details(server: Server) -> None:
    [device] = await server.fleet(1)
    shown = (await server.admin.get(f"/api/v1/devices/{device.device_id}")).json()
    assert shown["identity"] == device.identity
    assert shown["status"] == "accepted" and shown["device_type"] == "acme-gw"
    assert len(shown["public_key_id"]) == 64
    assert (await server.admin.get("/api/v1/devices/nope")).status_code == 404


async def test_tags_are_replaced_and_validated(server: Server) -> None:
    [device] = await server.fleet(1, tags=("lab",))
    url = f"/api/v1/devices/{device.device_id}/tags"
    response = await server.admin.put(url, json={"tags": ["eu", "canary", "eu"]})
    assert response.status_code == 200 and response.json()["tags"] == ["canary", "eu"]
    bad = await server.admin.put(url, json={"tags": ["no spaces"]})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    assert (
        await server.admin.put("/api/v1/devices/nope/tags", json={"tags": []})
    ).status_code == 404


async def test_history_records_admission_changes(server: Server) -> None:
    device = server.device("SN-1")
    device_id = (await device.auth()).json()["error"]["details"]["device_id"]
    await server.admin.post(f"/api/v1/devices/{device_id}/reject")
    await server.admin.post(f"/api/v1/devices/{device_id}/accept")
    await server.admin.post(f"/api/v1/devices/{device_id}/accept")  # no change, no entry
    history = (await server.admin.get(f"/api/v1/devices/{device_id}/history")).json()["items"]
    assert [(e["kind"], e["state"]) for e in history] == [
        ("admission", "pending"),
        ("admission", "rejected"),
        ("admission", "accepted"),
    ]
    assert history[1]["message"] == "rejected by an operator"
    assert [e["at"] for e in history] == sorted(e["at"] for e in history)


async def test_preauthorizing_a_known_identity_is_409(server: Server) -> None:
    [device] = await server.fleet(1)
    response = await server.admin.post(
        "/api/v1/devices/preauthorize",
        json={
            "identity": device.identity,
            "public_key": device.public_pem,
            "device_type": "acme-gw",
        },
    )
    assert response.status_code == 409


async def test_rejecting_a_device_ends_its_rollout(server: Server, artifact: BuiltArtifact) -> None:
    """A rejected device cannot report any more, so its phase must not wait for it."""
    keep, drop = await server.fleet(2)
    uploaded = await server.upload(artifact)
    dep = (await server.deploy(uploaded["id"]))["id"]
    await server.admin.post(f"/api/v1/devices/{drop.device_id}/reject")
    await keep.install(dep)
    done = await server.wait_for_deployment(dep, lambda d: d["status"] == "completed")
    assert done["counts"] == {"success": 1, "aborted": 1}


async def test_an_operator_replaces_a_device_key(server: Server) -> None:
    """A device is re-flashed with a new identity key: the operator registers the new
    public key, the device signs in with it and keeps its id and tags, and the old key
    is refused from then on."""
    [device] = await server.fleet(1, tags=("lab",))
    old_key = device.key
    device.key = Ed25519PrivateKey.generate()
    assert (await device.auth()).json()["error"]["code"] == "key_mismatch"
    url = f"/api/v1/devices/{device.device_id}/public-key"
    replaced = await server.admin.put(url, json={"public_key": device.public_pem})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["status"] == "accepted" and replaced.json()["tags"] == ["lab"]
    assert (await device.login()).device_id == device.device_id
    device.key = old_key
    assert (await device.auth()).json()["error"]["code"] == "key_mismatch"
    history = (await server.admin.get(f"/api/v1/devices/{device.device_id}/history")).json()
    assert "identity key replaced" in history["items"][-1]["message"]
    bad = await server.admin.put(url, json={"public_key": "not a key"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    missing = await server.admin.put(
        "/api/v1/devices/nope/public-key", json={"public_key": device.public_pem}
    )
    assert missing.status_code == 404
