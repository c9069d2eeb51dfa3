"""Signed version reports: a device proves what it runs, once per nonce.

The operator sees the last accepted report in the device view. A replayed
report (its nonce used or replaced) is 409 ``stale_nonce``; a report whose
signature does not verify with the device's registered key, or about another
device, is 422 ``invalid_version_report``.
"""

from __future__ import annotations

import copy

from tests.server.harness import Server
from tests.server.trust.operator import report_version, version_report


async def _nonce(device: object) -> str:
    response = await device.http.post(  # type: ignore[attr-defined]
        "/api/device/v1/tuf/nonce",
        headers=device.headers,  # type: ignore[attr-defined]
    )
    assert response.status_code == 200, response.text
    nonce: str = response.json()["nonce"]
    return nonce


async def test_an_accepted_report_shows_in_the_device_view_and_cannot_be_replayed(
    server: Server,
) -> None:
    """Report, see it as the operator, replay it: refused, the view keeps the original."""
    [device] = await server.fleet(1)
    view = (await server.admin.get(f"/api/v1/devices/{device.device_id}")).json()
    assert view["version_report"] is None
    nonce, answer = await report_version(
        device, target="acme-fw/1.0.0.fca", sha256="ab" * 32, release_counter=7
    )
    assert answer.status_code == 204, answer.text
    assert len(nonce) == 32 and int(nonce, 16) >= 0
    view = (await server.admin.get(f"/api/v1/devices/{device.device_id}")).json()
    report = view["version_report"]
    assert report["nonce"] == nonce
    assert report["installed_target"] == "acme-fw/1.0.0.fca"
    assert report["installed_sha256"] == "ab" * 32 and report["release_counter"] == 7
    assert report["report"]["signed"]["nonce"] == nonce and report["report"]["signatures"]

    replay = version_report(device, nonce, target="acme-fw/0.9.0.fca")
    answer = await device.http.post(
        "/api/device/v1/tuf/version-report", json=replay, headers=device.headers
    )
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "stale_nonce"
    view = (await server.admin.get(f"/api/v1/devices/{device.device_id}")).json()
    assert view["version_report"]["installed_target"] == "acme-fw/1.0.0.fca"


async def test_a_new_nonce_replaces_the_previous_one(server: Server) -> None:
    """Only the newest nonce counts: a report signed with an older one is stale."""
    [device] = await server.fleet(1)
    old = await _nonce(device)
    new = await _nonce(device)
    assert old != new
    for nonce, status in ((old, 409), (new, 204), (new, 409)):
        answer = await device.http.post(
            "/api/device/v1/tuf/version-report",
            json=version_report(device, nonce),
            headers=device.headers,
        )
        assert answer.status_code == status, answer.text


async def test_forged_and_foreign_reports_are_refused_without_using_the_nonce(
    server: Server,
) -> None:
    """Bad signature, another device's id or key, malformed: 422; the nonce stays valid."""
    first, second = await server.fleet(2)
    nonce = await _nonce(first)

    async def send(body: object) -> tuple[int, str]:
        answer = await first.http.post(
            "/api/device/v1/tuf/version-report", json=body, headers=first.headers
        )
        return answer.status_code, answer.json()["error"]["code"] if answer.content else ""

    tampered = version_report(first, nonce)
    tampered["signed"]["installed"]["release_counter"] = 99  # after signing
    assert await send(tampered) == (422, "invalid_version_report")
    by_other_key = version_report(second, nonce, device_id=first.device_id)
    assert await send(by_other_key) == (422, "invalid_version_report")
    about_other = version_report(first, nonce, device_id=second.device_id)
    assert await send(about_other) == (422, "invalid_version_report")
    malformed = copy.deepcopy(version_report(first, nonce))
    del malformed["signed"]["installed"]
    assert await send(malformed) == (422, "invalid_version_report")
    assert await send({"signed": "x"}) == (422, "invalid_version_report")
    not_json = await first.http.post(
        "/api/device/v1/tuf/version-report",
        content=b"[",
        headers={**first.headers, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422
    assert await send(version_report(first, nonce)) == (204, "")
