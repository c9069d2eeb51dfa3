"""The fleet at a glance: summary counts, device search, fleet-wide events.

These are the JSON twins of the console's dashboard and device list.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import update

from fleetcast.core.wire import Inventory
from fleetcast.server.db.models import Device
from tests.factories import BuiltArtifact
from tests.server.harness import Server, SimDevice


async def _inventory(device: SimDevice, version: str, **attributes: str) -> None:
    response = await device.send_inventory(Inventory("acme-gw", "acme-fw", version, attributes))
    assert response.status_code == 204, response.text


async def _last_seen(server: Server, device: SimDevice, ago: dt.timedelta | None) -> None:
    """Pretend the device was last seen ``ago`` (None: never)."""
    when = None if ago is None else dt.datetime.now(dt.UTC) - ago
    async with server.state.db.sessions() as session:
        await session.execute(
            update(Device).where(Device.id == device.device_id).values(last_seen_at=when)
        )
        await session.commit()


async def _summary(server: Server, **params: Any) -> dict[str, Any]:
    response = await server.admin.get("/api/v1/fleet/summary", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_summary_counts_the_fleet(server: Server, artifact: BuiltArtifact) -> None:
    """Four accepted devices (one silent for an hour, one never seen) and one pending."""
    a, b, c, d = await server.fleet(4)
    await server.device("SN-WAITING").auth()
    await _inventory(a, "1.0.0")
    await _inventory(b, "1.0.0")
    await _inventory(c, "1.1.0")
    await _last_seen(server, c, dt.timedelta(hours=1))
    await _last_seen(server, d, None)

    summary = await _summary(server)
    assert summary["devices"] == 4
    assert summary["by_status"] == {"accepted": 4, "pending": 1}
    assert (summary["online"], summary["offline"], summary["never_seen"]) == (2, 2, 1)
    assert summary["online_within"] == 300
    assert summary["versions"] == [
        {"artifact_name": "acme-fw", "artifact_version": "1.0.0", "devices": 2},
        {"artifact_name": "acme-fw", "artifact_version": "1.1.0", "devices": 1},
        {"artifact_name": None, "artifact_version": None, "devices": 1},
    ]
    assert summary["device_types"] == [{"device_type": "acme-gw", "devices": 4}]
    assert summary["deployments"] == {}

    # A wider window brings the device seen an hour ago back online.
    assert (await _summary(server, online_within=2 * 3600))["online"] == 3
    uploaded = await server.upload(artifact)
    await server.deploy(uploaded["id"])
    assert (await _summary(server))["deployments"] == {"running": 1}
    bad = await server.admin.get("/api/v1/fleet/summary", params={"online_within": 0})
    assert bad.status_code == 422


async def test_device_search_by_version_attribute_and_presence(server: Server) -> None:
    a, b, c = await server.fleet(3)
    await _inventory(a, "1.0.0", region="eu", hw="rev2")
    await _inventory(b, "1.1.0", region="eu", hw="rev3")
    await _inventory(c, "1.1.0", region="us", hw="rev3")
    await _last_seen(server, c, dt.timedelta(hours=2))

    async def ids(*params: tuple[str, str]) -> set[str]:
        response = await server.admin.get("/api/v1/devices", params=list(params))
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == len(page["items"])
        return {item["id"] for item in page["items"]}

    assert await ids(("artifact_version", "1.1.0")) == {b.device_id, c.device_id}
    assert await ids(("artifact_name", "acme-fw")) == {a.device_id, b.device_id, c.device_id}
    assert await ids(("artifact_name", "other")) == set()
    assert await ids(("attribute", "region=eu")) == {a.device_id, b.device_id}
    assert await ids(("attribute", "region=eu"), ("attribute", "hw=rev3")) == {b.device_id}
    assert await ids(("attribute", "region=mars")) == set()
    assert await ids(("online", "true")) == {a.device_id, b.device_id}
    assert await ids(("online", "false")) == {c.device_id}
    assert await ids(("online", "true"), ("online_within", "86400")) == {
        a.device_id,
        b.device_id,
        c.device_id,
    }
    assert await ids(("artifact_version", "1.1.0"), ("online", "false")) == {c.device_id}
    bad = await server.admin.get("/api/v1/devices", params={"attribute": "region"})
    assert bad.status_code == 422
    assert bad.json()["error"] == {
        "code": "validation_error",
        "message": "attribute filter 'region' is not KEY=VALUE",
        "details": {"attribute": "region"},
    }


async def test_events_list_recent_failures_across_the_fleet(
    server: Server, artifact: BuiltArtifact
) -> None:
    """A dashboard's "recent failures": newest first, each naming its device, paged."""
    devices = await server.fleet(3)
    uploaded = await server.upload(artifact)
    deployment = await server.deploy(uploaded["id"])
    dep_id = deployment["id"]
    await devices[0].install(dep_id, "failure", message="health check failed", log_tail=["boom"])
    await devices[1].install(dep_id, "success")
    await devices[2].install(dep_id, "failure", message="no space left", rolled_back=True)

    response = await server.admin.get("/api/v1/events", params={"state": "failure"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(e["device_id"], e["message"]) for e in body["items"]] == [
        (devices[2].device_id, "no space left"),
        (devices[0].device_id, "health check failed"),
    ]
    assert body["items"][1]["log_tail"] == ["boom"]
    assert body["items"][1]["device_identity"] == devices[0].identity
    assert body["items"][0]["rolled_back"] is True
    assert body["items"][0]["deployment_id"] == dep_id
    assert body["items"][0]["artifact_version"] == "1.1.0"
    assert body["next_before"] is None

    first = (await server.admin.get("/api/v1/events", params={"limit": 4})).json()
    assert len(first["items"]) == 4 and first["next_before"] == first["items"][-1]["id"]
    rest = (
        await server.admin.get(
            "/api/v1/events", params={"limit": 500, "before": first["next_before"]}
        )
    ).json()
    ids = [e["id"] for e in first["items"] + rest["items"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    every = (await server.admin.get("/api/v1/events", params={"limit": 500})).json()["items"]
    assert [e["id"] for e in every] == ids
    only_admission = await server.admin.get("/api/v1/events", params={"kind": "admission"})
    assert {e["kind"] for e in only_admission.json()["items"]} == {"admission"}
    one = await server.admin.get("/api/v1/events", params={"device_id": devices[1].device_id})
    assert {e["device_id"] for e in one.json()["items"]} == {devices[1].device_id}


async def test_deployment_devices_name_their_device(
    server: Server, artifact: BuiltArtifact
) -> None:
    devices = await server.fleet(2)
    uploaded = await server.upload(artifact)
    deployment = await server.deploy(uploaded["id"])
    page = (await server.admin.get(f"/api/v1/deployments/{deployment['id']}/devices")).json()
    assert {m["device_id"]: m["device_identity"] for m in page["items"]} == {
        d.device_id: d.identity for d in devices
    }
