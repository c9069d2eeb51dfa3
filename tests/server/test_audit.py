"""The audit log: every management change is recorded with who, what, when and outcome."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from fleetcast.server.services.audit import REDACTED, compact
from tests.factories import BuiltArtifact
from tests.server.harness import BASE, Server


async def _audit(server: Server, **params: Any) -> list[dict[str, Any]]:
    response = await server.admin.get("/api/v1/audit", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_management_actions_are_recorded_with_actor_target_and_outcome(
    server: Server, artifact: BuiltArtifact
) -> None:
    """An operator's day shows up in the audit log, newest first, with failures too."""
    uploaded = await server.upload(artifact)
    await server.fleet(2, tags=("lab",))
    device_id = (await server.admin.get("/api/v1/devices")).json()["items"][0]["id"]
    assert (
        await server.admin.put(f"/api/v1/devices/{device_id}/tags", json={"tags": ["x"]})
    ).is_success
    deployment = await server.deploy(uploaded["id"], target={"tags": ["lab"]})
    assert (await server.admin.post(f"/api/v1/deployments/{deployment['id']}/pause")).is_success
    missing = await server.admin.post("/api/v1/devices/nope/accept")
    assert missing.status_code == 404
    assert (await server.admin.get("/api/v1/devices")).is_success  # reads are not recorded

    events = await _audit(server)
    assert [e["action"] for e in events] == [
        "devices.accept",
        "deployments.pause",
        "deployments.create",
        "devices.set_tags",
        "enrollment-tokens.create",
        "artifacts.upload",
    ]
    accept, pause, create, tags, enrollment, upload = events
    assert accept["outcome"] == "not_found" and accept["status_code"] == 404
    assert accept["target_id"] == "nope"
    assert pause["target_id"] == deployment["id"] and pause["outcome"] == "ok"
    assert create["target_id"] == deployment["id"] and create["status_code"] == 201
    assert create["details"]["request"]["target"] == {"tags": ["lab"]}
    assert tags["target_id"] == device_id
    assert tags["details"] == {"request": {"tags": ["x"]}}
    assert enrollment["details"]["request"]["tags"] == ["lab"]
    assert upload["target_id"] == uploaded["id"]
    assert upload["details"]["version"] == "1.1.0"
    me = (await server.admin.get("/api/v1/tokens/me")).json()
    assert {(e["actor_id"], e["actor_name"]) for e in events} == {(me["id"], me["name"])}
    assert all(e["at"] and e["client"] for e in events)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True)


async def test_secrets_are_never_recorded(server: Server) -> None:
    created = await server.admin.post("/api/v1/tokens", json={"name": "ci", "scope": "operator"})
    assert created.status_code == 201
    ddi = await server.admin.post(
        "/api/v1/devices/preauthorize",
        json={"kind": "ddi", "identity": {"controller_id": "gw-7"}, "device_type": "gw"},
    )
    assert ddi.status_code == 201, ddi.text
    target = await server.admin.post(
        f"/api/v1/devices/{ddi.json()['id']}/target-token", json={"token": "s3cr3t-target-token"}
    )
    assert target.status_code == 200, target.text
    events = await _audit(server)
    assert [e["action"] for e in events] == [
        "devices.target_token",
        "devices.preauthorize",
        "tokens.create",
    ]
    assert events[0]["details"] == {"request": {"token": REDACTED}}
    assert events[1]["target_id"] == ddi.json()["id"]
    assert events[2]["target_id"] == created.json()["id"]
    everything = str(events)
    assert created.json()["token"] not in everything
    assert "s3cr3t" not in everything


def test_details_are_compact() -> None:
    assert compact({"a": {"enrollment_token": "x", "private_key": "y", "n": 1}}) == {
        "a": {"enrollment_token": REDACTED, "private_key": REDACTED, "n": 1}
    }
    assert compact({"big": "x" * 10_000}) == {"truncated": True, "size": 10_010}


async def test_denied_token_management_is_recorded_and_every_scope_can_read(
    server: Server,
) -> None:
    names = {}
    for scope in ("operator", "read-only"):
        created = await server.admin.post(
            "/api/v1/tokens", json={"name": f"{scope} bot", "scope": scope}
        )
        names[scope] = created.json()["token"]
    transport = httpx.ASGITransport(app=server.app)
    async with httpx.AsyncClient(
        transport=transport, base_url=BASE, headers={"Authorization": f"Bearer {names['operator']}"}
    ) as operator:
        denied = await operator.post("/api/v1/tokens", json={"name": "mine", "scope": "admin"})
        assert denied.status_code == 403
    async with httpx.AsyncClient(
        transport=transport,
        base_url=BASE,
        headers={"Authorization": f"Bearer {names['read-only']}"},
    ) as viewer:
        page = await viewer.get("/api/v1/audit", params={"actor": "operator bot"})
        assert page.status_code == 200
        (event,) = page.json()["items"]
        assert event["action"] == "tokens.create" and event["outcome"] == "forbidden"
        # Append-only: no method changes or removes an event.
        assert (await viewer.delete(f"/api/v1/audit/{event['id']}")).status_code in (404, 405)
        assert (await server.admin.delete("/api/v1/audit")).status_code == 405


async def test_a_change_refused_to_a_read_only_token_is_recorded(server: Server) -> None:
    """A wall-screen token that tries to abort a rollout is refused, and the attempt is
    in the log under its name: misuse of a leaked read-only credential is visible."""
    created = await server.admin.post(
        "/api/v1/tokens", json={"name": "wall screen", "scope": "read-only"}
    )
    transport = httpx.ASGITransport(app=server.app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url=BASE,
        headers={"Authorization": f"Bearer {created.json()['token']}"},
    ) as viewer:
        refused = await viewer.post("/api/v1/deployments/d-123/abort")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        assert (await viewer.get("/api/v1/devices")).status_code == 200  # reads stay open
    (event,) = await _audit(server, actor="wall screen")
    assert event["action"] == "deployments.abort" and event["target_id"] == "d-123"
    assert event["outcome"] == "forbidden" and event["status_code"] == 403


async def test_paging_and_filters(server: Server) -> None:
    for i in range(5):
        response = await server.admin.post(
            "/api/v1/enrollment-tokens", json={"expires_in": 600, "tags": [f"t{i}"]}
        )
        assert response.status_code == 201
    await server.admin.post("/api/v1/tokens", json={"name": "x", "scope": "read-only"})
    first = (await server.admin.get("/api/v1/audit", params={"limit": 4})).json()
    assert len(first["items"]) == 4 and first["next_before"] == first["items"][-1]["id"]
    rest = (await server.admin.get("/api/v1/audit", params={"before": first["next_before"]})).json()
    assert len(rest["items"]) == 2 and rest["next_before"] is None
    assert len(await _audit(server, action="enrollment-tokens.create")) == 5
    assert len(await _audit(server, action="enrollment-tokens.")) == 5
    assert len(await _audit(server, action="tokens.")) == 1
    assert await _audit(server, actor="somebody else") == []


async def test_the_database_refuses_to_rewrite_history(server: Server) -> None:
    """Even a query that bypasses the API cannot change or delete an audit event."""
    await server.admin.post("/api/v1/enrollment-tokens", json={"expires_in": 600})
    for statement in ("UPDATE audit_events SET outcome = 'ok'", "DELETE FROM audit_events"):
        async with server.state.db.sessions() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                await session.execute(text(statement))
    assert len(await _audit(server)) == 1
