"""The device's loop against the server: inventory, ``/next`` (poll and long-poll), download."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import pytest

from fleetcast.core.wire import Inventory, UpdateOffer
from tests.factories import BuiltArtifact
from tests.server.harness import Server


async def test_inventory_is_stored(server: Server) -> None:
    [device] = await server.fleet(1)
    response = await device.send_inventory(
        Inventory("acme-gw", "acme-fw", "1.0.0", {"kernel": "6.1", "mac": "02:00:00:00:00:01"})
    )
    assert response.status_code == 204
    shown = (await server.admin.get(f"/api/v1/devices/{device.device_id}")).json()
    assert (shown["artifact_name"], shown["artifact_version"]) == ("acme-fw", "1.0.0")
    assert shown["attributes"] == {"kernel": "6.1", "mac": "02:00:00:00:00:01"}
    assert shown["last_seen_at"] is not None


async def test_invalid_inventory_is_422(server: Server) -> None:
    [device] = await server.fleet(1)
    response = await server.http.put(
        "/api/device/v1/inventory", json={"device_type": ""}, headers=device.headers
    )
    assert response.status_code == 422


async def test_next_without_deployment_is_null_with_etag_and_304(server: Server) -> None:
    """Nothing to do: ``{"update": null}``; asking again with the ETag gives 304."""
    [device] = await server.fleet(1)
    first = await device.next()
    assert first.status_code == 200 and first.json() == {"update": None}
    etag = first.headers["ETag"]
    again = await device.next(etag=etag)
    assert again.status_code == 304 and again.headers["ETag"] == etag and again.content == b""


async def test_next_offers_the_deployment_like_the_agent_expects(
    server: Server, artifact: BuiltArtifact
) -> None:
    """The offer parses as the agent's ``UpdateOffer`` and its manifest verifies."""
    [device] = await server.fleet(1)
    uploaded = await server.upload(artifact)
    before = (await device.next()).headers["ETag"]
    deployment = await server.deploy(uploaded["id"])
    response = await device.next(etag=before)
    assert response.status_code == 200 and response.headers["ETag"] != before
    offer = UpdateOffer.from_dict(response.json()["update"])
    assert offer.deployment_id == deployment["id"]
    assert offer.artifact_id == uploaded["id"]
    assert offer.artifact_size == artifact.path.stat().st_size
    assert offer.artifact_sha256 == hashlib.sha256(artifact.path.read_bytes()).hexdigest()
    assert offer.download_url == f"/api/device/v1/artifacts/{uploaded['id']}/download"
    assert offer.manifest.signed_bytes == artifact.signed.signed_bytes
    assert offer.allow_downgrade is False
    # The same answer again: 304 with the new ETag.
    assert (await device.next(etag=response.headers["ETag"])).status_code == 304


async def test_long_poll_wakes_within_a_second_when_a_deployment_starts(
    server: Server, artifact: BuiltArtifact
) -> None:
    """A device holding ``/next?wait=8`` learns of a new deployment at once, no broker needed."""
    [device] = await server.fleet(1)
    uploaded = await server.upload(artifact)
    etag = (await device.next()).headers["ETag"]
    poll = asyncio.create_task(device.next(wait=8, etag=etag))
    await asyncio.sleep(0.3)
    assert not poll.done(), "the long-poll must hold while nothing changes"
    started = time.monotonic()
    deployment = await server.deploy(uploaded["id"])
    response = await asyncio.wait_for(poll, 5)
    # Woken by the deployment, not by the 8 s wait or the periodic re-check
    # (a generous bound: a loaded CI machine must not make this flaky).
    assert time.monotonic() - started < 4.0
    assert response.status_code == 200
    assert response.json()["update"]["deployment_id"] == deployment["id"]


async def test_long_poll_times_out_with_304(server: Server) -> None:
    [device] = await server.fleet(1)
    etag = (await device.next()).headers["ETag"]
    started = time.monotonic()
    response = await device.next(wait=1, etag=etag)
    assert response.status_code == 304
    assert 0.9 <= time.monotonic() - started < 5


async def test_long_poll_wait_out_of_range_is_422(server: Server) -> None:
    [device] = await server.fleet(1)
    response = await device.next(wait=-1)
    assert response.status_code == 422


async def test_download_with_range_resumes(server: Server, artifact: BuiltArtifact) -> None:
    """An interrupted download continues with ``Range: bytes=N-`` (206) and ``If-Range``."""
    [device] = await server.fleet(1)
    uploaded = await server.upload(artifact)
    data = artifact.path.read_bytes()
    url = f"/artifacts/{uploaded['id']}/download"

    full = await device.get(url)
    assert full.status_code == 200 and full.content == data
    assert full.headers["accept-ranges"] == "bytes"
    etag = full.headers["etag"]

    cut = len(data) // 3
    rest = await device.get(url, headers={"Range": f"bytes={cut}-", "If-Range": etag})
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes {cut}-{len(data) - 1}/{len(data)}"
    assert data[:cut] + rest.content == data

    stale = await device.get(url, headers={"Range": f"bytes={cut}-", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == data  # validator changed: whole file

    admin = await server.admin.get(
        f"/api/v1/artifacts/{uploaded['id']}/download", headers={"Range": "bytes=0-99"}
    )
    assert admin.status_code == 206 and admin.content == data[:100]


async def test_download_needs_a_device_token_and_a_known_artifact(
    server: Server, artifact: BuiltArtifact
) -> None:
    [device] = await server.fleet(1)
    uploaded = await server.upload(artifact)
    anonymous = await server.http.get(f"/api/device/v1/artifacts/{uploaded['id']}/download")
    assert anonymous.status_code == 401
    missing = await device.get("/artifacts/nope/download")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def _member(server: Server, deployment_id: str) -> dict[str, Any]:
    members = await server.admin.get(f"/api/v1/deployments/{deployment_id}/devices")
    [member] = members.json()["items"]
    result: dict[str, Any] = member
    return result


async def _states(server: Server, device_id: str) -> list[str]:
    history = await server.admin.get(f"/api/v1/devices/{device_id}/history")
    return [e["state"] for e in history.json()["items"] if e["kind"] == "status"]


async def test_a_report_overtaken_by_a_newer_seq_is_ignored(
    server: Server, artifact: BuiltArtifact
) -> None:
    """Requests of one device arrive out of order (a client gave up on a slow request,
    retried and moved on; the old request lands later): the late one is answered 204
    like a repeat and changes nothing, neither the progress nor the history; the device's
    newer reports are recorded as usual."""
    [device] = await server.fleet(1)
    assert device.device_id is not None
    deployment = await server.deploy((await server.upload(artifact))["id"])
    assert await device.offer() is not None
    dep = deployment["id"]
    for status, seq, progress in [("downloading", 1, 0), ("downloading", 3, 60)]:
        assert (await device.report(dep, status, seq=seq, progress=progress)).status_code == 204
    late = await device.report(dep, "downloading", seq=2, progress=30)
    assert late.status_code == 204
    assert (await _member(server, dep))["progress"] == 60
    assert (await device.report(dep, "installing", seq=4, progress=100)).status_code == 204
    for seq in (2, 4):  # late, and an exact repeat of the last one
        assert (await device.report(dep, "downloading", seq=seq)).status_code == 204
    member = await _member(server, dep)
    assert (member["state"], member["progress"]) == ("installing", 100)
    assert await _states(server, device.device_id) == ["downloading", "installing"]
    for status, seq in [("rebooting", 5), ("success", 6)]:
        assert (await device.report(dep, status, seq=seq)).status_code == 204
    assert await _states(server, device.device_id) == [
        "downloading",
        "installing",
        "rebooting",
        "success",
    ]
    assert (await _member(server, dep))["state"] == "success"


async def test_reports_without_seq_and_final_reports_are_not_held_back(
    server: Server, artifact: BuiltArtifact
) -> None:
    """An agent from before ``seq`` (and the compatibility APIs) is recorded in arrival
    order as always. A final report is never ignored for its seq: it is a device's last
    word in a deployment, and a device that lost its journal (and its counter) must
    still be able to finish."""
    [device] = await server.fleet(1)
    assert device.device_id is not None
    deployment = await server.deploy((await server.upload(artifact))["id"])
    assert await device.offer() is not None
    dep = deployment["id"]
    assert (await device.report(dep, "downloading", seq=40)).status_code == 204
    assert (await device.report(dep, "installing")).status_code == 204  # no seq
    assert (await device.report(dep, "rebooting", seq=41)).status_code == 204
    assert (await device.report(dep, "success", seq=3)).status_code == 204  # counter reset
    assert await _states(server, device.device_id) == [
        "downloading",
        "installing",
        "rebooting",
        "success",
    ]
    again = await device.report(dep, "success", seq=3)
    assert again.status_code == 204
    assert await _states(server, device.device_id) == [
        "downloading",
        "installing",
        "rebooting",
        "success",
    ]
    conflict = await device.report(dep, "failure", seq=1)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "status_conflict"


@pytest.mark.parametrize("seq", [-1, 2**63, "7", True, 1.5])
async def test_invalid_seq_is_422(server: Server, artifact: BuiltArtifact, seq: object) -> None:
    [device] = await server.fleet(1)
    deployment = await server.deploy((await server.upload(artifact))["id"])
    response = await server.http.post(
        f"/api/device/v1/deployments/{deployment['id']}/status",
        json={"status": "downloading", "seq": seq},
        headers=device.headers,
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
