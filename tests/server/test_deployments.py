"""Deployments: who is targeted, which phase each device lands in, and operator control."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import BuiltArtifact
from tests.server.harness import Server


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"phases": [{"percent": 50}]}, id="last-phase-below-100"),
        pytest.param(
            {"phases": [{"percent": 60}, {"percent": 30}, {"percent": 100}]}, id="shrinking"
        ),
        pytest.param({"phases": [{"percent": 10, "count": 2}, {"percent": 100}]}, id="both-kinds"),
        pytest.param({"phases": []}, id="no-phases"),
        pytest.param({"phases": [{"percent": 100, "max_failure_percent": 150}]}, id="threshold"),
        pytest.param({"phases": [{"percent": 100, "color": "red"}]}, id="unknown-field"),
        pytest.param({"target": {}}, id="empty-target"),
        pytest.param({"target": {"tags": ["nobody-has-this"]}}, id="target-matches-nothing"),
        pytest.param({"artifact_id": "no-such-artifact"}, id="unknown-artifact"),
        pytest.param({"name": ""}, id="empty-name"),
    ],
)
async def test_invalid_deployments_are_422(
    server: Server, artifact: BuiltArtifact, body: dict[str, Any]
) -> None:
    await server.fleet(2)
    uploaded = await server.upload(artifact)
    request = {"name": "x", "artifact_id": uploaded["id"], "target": {"device_types": ["acme-gw"]}}
    response = await server.admin.post("/api/v1/deployments", json={**request, **body})
    assert _error(response) == (422, "validation_error"), response.text
    assert (await server.admin.get("/api/v1/deployments")).json()["items"] == []


async def test_twenty_devices_in_three_phases(server: Server, artifact: BuiltArtifact) -> None:
    """10% / 50% / 100% of 20 devices: 2 canaries, then 8, then the last 10."""
    fleet = await server.fleet(20)
    uploaded = await server.upload(artifact)
    deployment = await server.deploy(
        uploaded["id"],
        phases=[
            {"percent": 10, "soak_seconds": 3600},
            {"percent": 50},
            {"percent": 100},
        ],
    )
    assert deployment["status"] == "running" and deployment["total"] == 20
    assert [p["devices"] for p in deployment["phases"]] == [2, 8, 10]
    assert deployment["phases"][0]["counts"] == {"scheduled": 2}
    assert deployment["counts"] == {"scheduled": 2, "pending": 18}
    assert deployment["phases"][1]["max_failure_percent"] == 100  # the documented default
    offered = [d for d in fleet if await d.offer() is not None]
    members = (await server.admin.get(f"/api/v1/deployments/{deployment['id']}/devices")).json()
    canaries = [m["device_id"] for m in members["items"] if m["phase"] == 0]
    assert sorted(d.device_id or "" for d in offered) == sorted(canaries)
    assert members["total"] == 20


async def test_target_is_or_within_a_kind_and_across_kinds(
    server: Server, artifact: BuiltArtifact
) -> None:
    lab = await server.fleet(2, tags=("lab",), prefix="LAB")
    eu = await server.fleet(2, tags=("eu",), prefix="EU")
    await server.fleet(2, tags=("us",), prefix="US")
    other = await server.fleet(1, tags=("lab",), device_type="other-gw", prefix="OTHER")
    uploaded = await server.upload(artifact)

    by_tags = await server.deploy(uploaded["id"], target={"tags": ["lab", "eu"]})
    assert by_tags["total"] == 5  # lab OR eu, any type (one of them is skipped)
    both = await server.deploy(
        uploaded["id"], target={"tags": ["lab"], "device_types": ["other-gw"]}
    )
    assert both["total"] == 1  # lab AND other-gw
    one = await server.deploy(
        uploaded["id"], target={"device_ids": [lab[0].device_id, eu[0].device_id], "tags": ["eu"]}
    )
    assert one["total"] == 1
    assert other[0].device_id is not None


async def test_only_accepted_devices_are_targeted(server: Server, artifact: BuiltArtifact) -> None:
    await server.fleet(2)
    pending = await server.device("SN-PENDING").auth()
    assert pending.status_code == 401
    uploaded = await server.upload(artifact)
    deployment = await server.deploy(uploaded["id"])
    assert deployment["total"] == 2


async def test_incompatible_device_type_is_skipped(server: Server, artifact: BuiltArtifact) -> None:
    """A targeted device whose type the artifact does not list is skipped, never offered."""
    [fits] = await server.fleet(1, tags=("lab",), prefix="FIT")
    [odd] = await server.fleet(1, tags=("lab",), device_type="other-gw", prefix="ODD")
    uploaded = await server.upload(artifact)
    deployment = await server.deploy(uploaded["id"], target={"tags": ["lab"]})
    assert deployment["counts"] == {"scheduled": 1, "skipped": 1}
    assert [p["devices"] for p in deployment["phases"]] == [1]
    assert await odd.offer() is None
    assert (await odd.report(deployment["id"], "downloading")).status_code == 409
    await fits.install(deployment["id"])
    done = await server.wait_for_deployment(deployment["id"], lambda d: d["status"] == "completed")
    assert done["counts"] == {"success": 1, "skipped": 1}


async def test_pause_resume_abort(server: Server, artifact: BuiltArtifact) -> None:
    """The operator pauses (no new starts), resumes, then aborts (late starters get 409)."""
    fleet = await server.fleet(3)
    uploaded = await server.upload(artifact)
    deployment = await server.deploy(uploaded["id"])
    dep = deployment["id"]
    started, finisher, idle = fleet
    assert (await started.report(dep, "downloading")).status_code == 204
    assert (await finisher.report(dep, "downloading")).status_code == 204

    paused = (await server.admin.post(f"/api/v1/deployments/{dep}/pause")).json()
    assert paused["status"] == "paused" and paused["pause_reason"] == "paused by an operator"
    assert await idle.offer() is None and await started.offer() is None
    # Devices already updating may still report while paused.
    assert (await started.report(dep, "installing")).status_code == 204

    resumed = (await server.admin.post(f"/api/v1/deployments/{dep}/resume")).json()
    assert resumed["status"] == "running" and resumed["pause_reason"] is None
    assert (await idle.offer()) is not None

    aborted = (await server.admin.post(f"/api/v1/deployments/{dep}/abort")).json()
    assert aborted["status"] == "aborted" and aborted["finished_at"] is not None
    assert aborted["counts"] == {"installing": 1, "downloading": 1, "aborted": 1}
    assert await idle.offer() is None
    late = await idle.report(dep, "downloading")
    assert _error(late) == (409, "deployment_aborted")
    assert _error(await started.report(dep, "rebooting")) == (409, "deployment_aborted")
    # A device that had already committed may still tell us it succeeded.
    assert (await finisher.report(dep, "success")).status_code == 204
    assert _error(await server.admin.post(f"/api/v1/deployments/{dep}/resume")) == (409, "conflict")
    assert _error(await server.admin.post(f"/api/v1/deployments/{dep}/pause")) == (409, "conflict")
    assert (await server.admin.post(f"/api/v1/deployments/{dep}/abort")).status_code == 200


async def test_list_and_unknown_deployment(server: Server, artifact: BuiltArtifact) -> None:
    await server.fleet(1)
    uploaded = await server.upload(artifact)
    deployment = await server.deploy(uploaded["id"], name="fw 1.1.0")
    items = (await server.admin.get("/api/v1/deployments")).json()["items"]
    assert [(d["id"], d["name"], d["artifact_version"]) for d in items] == [
        (deployment["id"], "fw 1.1.0", "1.1.0")
    ]
    assert items[0]["phases"][0]["devices"] == 1
    for path in ("", "/devices"):
        response = await server.admin.get(f"/api/v1/deployments/nope{path}")
        assert _error(response) == (404, "not_found")
    assert _error(await server.admin.post("/api/v1/deployments/nope/abort")) == (404, "not_found")
