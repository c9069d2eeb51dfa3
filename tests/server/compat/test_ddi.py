"""The hawkBit DDI API: what SWUpdate and rauc-hawkbit-updater see, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest

from fleetcast.exceptions import ValidationError
from fleetcast.server import Settings
from fleetcast.server.compat.ddi_service import Feedback, MaintenanceWindow
from tests.server.compat.helpers import DdiDevice, action_id, ddi_device, upload_swu
from tests.server.harness import Server, running_server

SWU = b"\x30\x37\x30\x37\x30\x32" + bytes(range(256)) * 40  # any bytes: the server does not look


async def _deploy(server: Server, artifact_id: str, device_id: str, **extra: Any) -> str:
    deployment = await server.deploy(artifact_id, target={"device_ids": [device_id]}, **extra)
    return str(deployment["id"])


async def _member(server: Server, deployment_id: str, device_id: str) -> dict[str, Any]:
    response = await server.admin.get(f"/api/v1/deployments/{deployment_id}/devices")
    return next(m for m in response.json()["items"] if m["device_id"] == device_id)


async def test_authentication_tokens_and_tenant(server: Server) -> None:
    """A TargetToken admits its own controller only; no or a wrong token is 401 in the one
    error shape; another tenant is 404."""
    device_id, device = await ddi_device(server, "ctrl-1")
    assert (await device.get()).status_code == 200
    response = await server.http.get(device.root)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    wrong = DdiDevice(server.http, "ctrl-1", "x" * 32)
    assert (await wrong.get()).status_code == 401
    other = DdiDevice(server.http, "ctrl-2", device.token)
    assert (await other.get()).status_code == 401
    elsewhere = DdiDevice(server.http, "ctrl-1", device.token, tenant="acme")
    response = await elsewhere.get()
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    upper = DdiDevice(server.http, "ctrl-1", device.token, tenant="DEFAULT")
    assert (await upper.get()).status_code == 200
    history = await server.admin.get(f"/api/v1/devices/{device_id}/history")
    assert [e["message"] for e in history.json()["items"]][
        -1
    ] == "preauthorized target token presented"
    rejected = await server.admin.post(f"/api/v1/devices/{device_id}/reject")
    assert rejected.status_code == 200
    response = await device.get()
    assert response.status_code == 403 and response.json()["error"]["code"] == "device_rejected"


async def test_gateway_token_registers_devices_pending(
    settings: Settings, admin_token: str
) -> None:
    """With a GatewayToken an unknown controller is registered pending (the operator
    accepts it), unless the server accepts gateway devices at once."""
    gateway = "g" * 24
    pending = settings.model_copy(update={"ddi_gateway_token": gateway})
    async with running_server(pending, admin_token) as server:
        device = DdiDevice(server.http, "gw-1", gateway, scheme="GatewayToken")
        response = await device.get()
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "device_pending"
        listed = (await server.admin.get("/api/v1/devices", params={"status": "pending"})).json()
        [row] = listed["items"]
        assert row["kind"] == "ddi" and row["identity"] == {"controller_id": "gw-1"}
        assert row["device_type"] == "hawkbit"
        await server.admin.post(f"/api/v1/devices/{row['id']}/accept")
        assert (await device.get()).status_code == 200
        wrong = DdiDevice(server.http, "gw-2", "h" * 24, scheme="GatewayToken")
        assert (await wrong.get()).status_code == 401
    accepting = settings.model_copy(
        update={"ddi_gateway_token": gateway, "ddi_gateway_accept": True}
    )
    async with running_server(accepting, admin_token) as server:
        device = DdiDevice(server.http, "gw-3", gateway, scheme="GatewayToken")
        assert (await device.get()).status_code == 200


async def test_gateway_token_is_off_by_default(server: Server) -> None:
    device = DdiDevice(server.http, "gw-1", "g" * 24, scheme="GatewayToken")
    response = await device.get()
    assert response.status_code == 401 and "GatewayToken" in response.json()["error"]["message"]


async def test_config_data_merge_replace_remove(server: Server) -> None:
    """configData answers 200, asks for data only until it got some, and sets the type."""
    device_id, device = await ddi_device(server, "cfg-1", device_type="hawkbit")
    assert "configData" in (await device.poll())["_links"]
    root = device.root
    # SWUpdate's body: an empty id, a legacy time stamp, a status, and the data.
    body = {"id": "", "time": "20261127T120000", "status": {"execution": "closed"}}
    response = await server.http.put(
        root + "/configData",
        json={**body, "data": {"device_type": "acme-swu", "serial": "S1"}},
        headers=device.headers,
    )
    assert response.status_code == 200
    response = await server.http.put(
        root + "/configData", json={"mode": "merge", "data": {"hw": "2"}}, headers=device.headers
    )
    assert response.status_code == 200
    row = (await server.admin.get(f"/api/v1/devices/{device_id}")).json()
    assert row["attributes"] == {"device_type": "acme-swu", "serial": "S1", "hw": "2"}
    assert row["device_type"] == "acme-swu"
    assert "configData" not in (await device.poll()).get("_links", {})
    await server.http.put(
        root + "/configData", json={"mode": "remove", "data": {"hw": ""}}, headers=device.headers
    )
    await server.http.put(
        root + "/configData",
        json={"mode": "replace", "data": {"serial": "S2", "device_type": "acme-swu"}},
        headers=device.headers,
    )
    row = (await server.admin.get(f"/api/v1/devices/{device_id}")).json()
    assert row["attributes"] == {"serial": "S2", "device_type": "acme-swu"}
    bad = await server.http.put(
        root + "/configData", json={"mode": "nope", "data": {}}, headers=device.headers
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"


async def test_update_flow_links_hashes_download_and_feedback(server: Server) -> None:
    """The whole DDI dance: absolute links built from X-Forwarded-* headers, string ids,
    sha1/md5/sha256, a ranged download and .MD5SUM, lenient feedback answered 200, the
    states recorded like a native agent's, and 410 once the action is closed."""
    artifact = await upload_swu(server, SWU)
    device_id, device = await ddi_device(server, "flow-1")
    assert "deploymentBase" not in (await device.poll()).get("_links", {})
    deployment_id = await _deploy(server, artifact["id"], device_id)

    proxy = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "ota.example.com",
        "X-Forwarded-Prefix": "/fc",
    }
    poll = (await device.get(headers=proxy)).json()
    assert poll["config"]["polling"]["sleep"] == "00:05:00"
    href = poll["_links"]["deploymentBase"]["href"]
    assert href.startswith(
        "https://ota.example.com/fc/default/controller/v1/flow-1/deploymentBase/"
    )
    action = action_id(poll)
    base = (await device.get(f"/deploymentBase/{action}")).json()
    assert base["id"] == str(action)
    assert (base["deployment"]["download"], base["deployment"]["update"]) == ("forced", "forced")
    [chunk] = base["deployment"]["chunks"]
    assert (chunk["part"], chunk["name"], chunk["version"]) == ("os", "acme-swu", "1.1.0")
    [art] = chunk["artifacts"]
    assert art["filename"] == "acme-swu-1.1.0.swu" and art["size"] == len(SWU)
    assert art["hashes"] == {
        "sha1": hashlib.sha1(SWU).hexdigest(),
        "md5": hashlib.md5(SWU).hexdigest(),
        "sha256": hashlib.sha256(SWU).hexdigest(),
    }
    download = art["_links"]["download-http"]["href"]
    assert download.startswith(
        "http://fleetcast.test/default/controller/v1/flow-1/softwaremodules/"
    )
    whole = await device.follow(download)
    assert whole.status_code == 200 and whole.content == SWU
    part = await device.http.get(
        download,
        headers={**device.headers, "Range": "bytes=100-", "If-Range": whole.headers["etag"]},
    )
    assert part.status_code == 206 and part.content == SWU[100:]
    assert part.headers["content-range"] == f"bytes 100-{len(SWU) - 1}/{len(SWU)}"
    md5 = await device.follow(art["_links"]["md5sum-http"]["href"])
    assert md5.text == f"{hashlib.md5(SWU).hexdigest()}  acme-swu-1.1.0.swu\n"
    assert (await server.http.get(download)).status_code == 401

    response = await device.feedback(
        action, "proceeding", details=["Installing Update Chunk Artifacts."], progress=(0, 1)
    )
    assert response.status_code == 200
    assert (await _member(server, deployment_id, device_id))["state"] == "downloading"
    assert (await device.feedback(action, "proceeding", details=["a log line"])).status_code == 200
    await device.feedback(action, "proceeding", details=["All Chunks Installed."], progress=(1, 1))
    member = await _member(server, deployment_id, device_id)
    assert (member["state"], member["progress"]) == ("installing", 100)
    response = await device.feedback(action, "closed", "success", ["Update Installed."])
    assert response.status_code == 200
    await server.wait_for_deployment(deployment_id, lambda d: d["status"] == "completed")
    row = (await server.admin.get(f"/api/v1/devices/{device_id}")).json()
    assert (row["artifact_name"], row["artifact_version"]) == ("acme-swu", "1.1.0")
    history = (await server.admin.get(f"/api/v1/devices/{device_id}/history")).json()["items"]
    assert [e["state"] for e in history if e["kind"] == "status"] == [
        "downloading",
        "installing",
        "success",
    ]

    late = await device.feedback(action, "closed", "success")
    assert late.status_code == 410 and late.json()["error"]["code"] == "gone"
    poll = await device.poll()
    assert "deploymentBase" not in poll["_links"]
    installed = await device.follow(poll["_links"]["installedBase"]["href"])
    assert installed.status_code == 200 and installed.json()["id"] == str(action)
    assert (await device.get("/deploymentBase/999999")).status_code == 404


async def test_failure_with_details_counts_against_the_phase(server: Server) -> None:
    """A failed install (its details become the log tail) pauses a phase allowing 40%."""
    artifact = await upload_swu(server, SWU)
    failing_id, failing = await ddi_device(server, "bad-1")
    idle_id, _ = await ddi_device(server, "idle-1")
    for device_id in (failing_id, idle_id):
        await server.admin.post(f"/api/v1/devices/{device_id}/accept")
    deployment = await server.deploy(
        artifact["id"],
        target={"device_types": ["acme-swu"]},
        phases=[{"percent": 100, "max_failure_percent": 40}],
    )
    action = action_id(await failing.poll())
    await failing.feedback(action, "proceeding", details=["ERROR : HASH mismatch : a <--> b"])
    response = await failing.feedback(action, "closed", "failure", ["No suitable .swu image found"])
    assert response.status_code == 200
    paused = await server.wait_for_deployment(deployment["id"], lambda d: d["status"] == "paused")
    assert paused["pause_reason"].startswith("phase 1: 1 of 2 devices failed (50%)")
    member = await _member(server, deployment["id"], failing_id)
    assert member["state"] == "failure"
    assert member["log_tail"] == [
        "ERROR : HASH mismatch : a <--> b",
        "No suitable .swu image found",
    ]


async def test_abort_becomes_cancel_action(server: Server) -> None:
    """An aborted deployment shows up as cancelAction; the device acknowledges it, its
    membership ends `aborted` and the action is closed."""
    artifact = await upload_swu(server, SWU)
    device_id, device = await ddi_device(server, "cancel-1")
    deployment_id = await _deploy(server, artifact["id"], device_id)
    action = action_id(await device.poll())
    await device.feedback(action, "proceeding", details=["downloading"])
    await server.admin.post(f"/api/v1/deployments/{deployment_id}/abort")
    # Progress on an aborted deployment is accepted (the cancel comes with the next poll).
    assert (await device.feedback(action, "proceeding")).status_code == 200
    poll = await device.poll()
    assert "deploymentBase" not in poll["_links"]
    cancel = await device.follow(poll["_links"]["cancelAction"]["href"])
    assert cancel.json() == {"id": str(action), "cancelAction": {"stopId": str(action)}}
    response = await device.feedback(
        action, "closed", "success", ["cancellation acknowledged."], kind="cancelAction"
    )
    assert response.status_code == 200
    member = await _member(server, deployment_id, device_id)
    assert member["state"] == "aborted"
    assert "cancelAction" not in (await device.poll()).get("_links", {})
    assert (await device.feedback(action, "closed", "success")).status_code == 410


async def test_action_types(server: Server) -> None:
    """soft asks before both steps, downloadonly never installs: its `downloaded` is final."""
    soft = await upload_swu(server, SWU, version="1.1.0")
    only = await upload_swu(server, SWU + b"2", version="1.2.0")
    a_id, a = await ddi_device(server, "soft-1")
    b_id, b = await ddi_device(server, "dl-1")
    await _deploy(server, soft["id"], a_id, ddi={"action_type": "soft"})
    dep_b = await _deploy(server, only["id"], b_id, ddi={"action_type": "downloadonly"})
    base_a = (await a.follow((await a.poll())["_links"]["deploymentBase"]["href"])).json()
    assert (base_a["deployment"]["download"], base_a["deployment"]["update"]) == (
        "attempt",
        "attempt",
    )
    action = action_id(await b.poll())
    base_b = (await b.get(f"/deploymentBase/{action}")).json()
    assert (base_b["deployment"]["download"], base_b["deployment"]["update"]) == ("forced", "skip")
    await b.feedback(action, "download")
    assert (await _member(server, dep_b, b_id))["state"] == "downloading"
    await b.feedback(action, "downloaded")
    assert (await _member(server, dep_b, b_id))["state"] == "success"
    shown = (await server.admin.get(f"/api/v1/deployments/{dep_b}")).json()
    assert shown["ddi"]["action_type"] == "downloadonly"


async def test_maintenance_window_withholds_unstarted_actions(server: Server) -> None:
    artifact = await upload_swu(server, SWU)
    device_id, device = await ddi_device(server, "mw-1")
    now = dt.datetime.now(dt.UTC)
    closed = {"start": (now + dt.timedelta(hours=3)).strftime("%H:%M"), "duration_minutes": 60}
    await _deploy(server, artifact["id"], device_id, ddi={"maintenance_window": closed})
    assert "deploymentBase" not in (await device.poll()).get("_links", {})

    other_id, other = await ddi_device(server, "mw-2")
    opened = {"start": (now - dt.timedelta(minutes=5)).strftime("%H:%M"), "duration_minutes": 60}
    second = await upload_swu(server, SWU, version="1.3.0")
    await _deploy(server, second["id"], other_id, ddi={"maintenance_window": opened})
    base = (await other.follow((await other.poll())["_links"]["deploymentBase"]["href"])).json()
    assert base["deployment"]["maintenanceWindow"] == "available"


@pytest.mark.parametrize(
    ("start", "minutes", "offset", "weekdays", "now", "expected"),
    [
        ("22:00", 180, 0, (), "2026-11-27T23:30:00+00:00", True),
        ("22:00", 180, 0, (), "2026-11-28T00:30:00+00:00", True),  # across midnight
        ("22:00", 180, 0, (), "2026-11-28T01:00:00+00:00", False),  # ends at 01:00
        ("22:00", 180, 0, (), "2026-11-27T21:59:00+00:00", False),
        ("22:00", 120, 60, (), "2026-11-27T21:30:00+00:00", True),  # 22:30 at UTC+1
        ("22:00", 180, 0, (4,), "2026-11-27T22:30:00+00:00", True),  # a Friday
        ("22:00", 180, 0, (4,), "2026-11-28T22:30:00+00:00", False),  # Saturday
        ("22:00", 180, 0, (4,), "2026-11-28T00:30:00+00:00", True),  # Friday's window
    ],
)
def test_maintenance_window_is_open(
    start: str, minutes: int, offset: int, weekdays: tuple[int, ...], now: str, expected: bool
) -> None:
    window = MaintenanceWindow(start, minutes, offset, weekdays)
    assert window.is_open(dt.datetime.fromisoformat(now)) is expected


def test_feedback_parsing_is_lenient_but_not_blind() -> None:
    legacy = Feedback.parse(
        b'{"id": 7, "time": "20261127T1200", "status": {"execution": "PROCEEDING",'
        b' "result": {"finished": "none", "progress": {"cnt": 1, "of": 4}}, "details": "one"}}'
    )
    assert legacy == Feedback("proceeding", "none", 25, ("one",))
    minimal = Feedback.parse(
        b'{"status": {"execution": "closed", "result": {"finished": "success"}}}'
    )
    assert minimal == Feedback("closed", "success")
    assert Feedback.parse(b'{"status": {"execution": "closed"}}').finished == "none"
    bad_bodies = [
        b"nope",
        b"{}",
        b'{"status": {"execution": "dancing"}}',
        b'{"status": {"execution": "closed", "result": {"finished": "maybe"}}}',
    ]
    for bad in bad_bodies:
        with pytest.raises(ValidationError):
            Feedback.parse(bad)


async def test_a_deployment_without_a_file_artifact_skips_ddi_devices(
    server: Server, artifact: Any
) -> None:
    """A native artifact cannot be installed by a DDI client: the device is skipped, saying why."""
    native = await server.upload(artifact)
    device_id, device = await ddi_device(server, "skip-1", device_type="acme-gw")
    await server.admin.post(f"/api/v1/devices/{device_id}/accept")
    await server.fleet(1)
    deployment = await server.deploy(native["id"], target={"device_types": ["acme-gw"]})
    member = await _member(server, deployment["id"], device_id)
    assert member["state"] == "skipped" and member["artifact_id"] is None
    assert member["last_message"] == (
        "no artifact for a ddi device: it installs file artifacts, the deployment has fleetcast"
    )
    assert "deploymentBase" not in (await device.poll()).get("_links", {})


async def test_hostile_input_is_refused_not_crashed(settings: Settings, admin_token: str) -> None:
    """Non-ASCII tokens, absurd action ids and malformed feedback are 4xx, never 500."""
    configured = settings.model_copy(update={"ddi_gateway_token": "g" * 24})
    async with running_server(configured, admin_token) as server:
        response = await server.http.get(
            "/default/controller/v1/x",
            headers={"Authorization": "GatewayToken gé".encode("latin-1")},
        )
        assert response.status_code == 401
        _, device = await ddi_device(server, "hostile-1")
        assert (await device.get(f"/deploymentBase/{10**30}")).status_code == 422
        assert (await device.get("/deploymentBase/0")).status_code == 422
        response = await server.http.post(
            device.root + "/deploymentBase/1/feedback", content=b"\xff\xfe", headers=device.headers
        )
        assert response.status_code in (404, 422)
        assert set(response.json()) == {"error"}


async def test_pause_keeps_a_working_device_on_its_action(server: Server) -> None:
    """Paused: a device that has not started is offered nothing; one already installing
    still finds its action (SWUpdate reports its result through it after a restart)."""
    artifact = await upload_swu(server, SWU)
    working_id, working = await ddi_device(server, "pause-1")
    waiting_id, waiting = await ddi_device(server, "pause-2")
    deployment = await server.deploy(artifact["id"], target={"device_types": ["acme-swu"]})
    action = action_id(await working.poll())
    await working.feedback(action, "proceeding", progress=(1, 1))
    await server.admin.post(f"/api/v1/deployments/{deployment['id']}/pause")
    assert action_id(await working.poll()) == action
    assert "deploymentBase" not in (await waiting.poll()).get("_links", {})
    assert (await working.feedback(action, "closed", "success")).status_code == 200
    assert (await _member(server, deployment["id"], working_id))["state"] == "success"
    assert (await _member(server, deployment["id"], waiting_id))["state"] == "scheduled"
