"""One artifact store and one fleet for every kind: uploads, mixed deployments, migration head."""

from __future__ import annotations

import io
from typing import Any

import pytest
from alembic.script import ScriptDirectory

from fleetcast.exceptions import ArtifactFormatError, IntegrityError
from fleetcast.server.compat.mender_artifact import read_mender_artifact
from fleetcast.server.db.migrate import alembic_config
from tests.factories import BuiltArtifact
from tests.server.compat.helpers import (
    MenderDevice,
    ddi_device,
    mender_artifact,
    tar_of,
    upload_swu,
)
from tests.server.harness import Server


def test_reads_a_mender_artifact() -> None:
    info = read_mender_artifact(io.BytesIO(mender_artifact("app-2.0", ("a", "b"))))
    assert info.artifact_name == "app-2.0"
    assert info.device_types == ("a", "b")
    assert info.payload_types == ("single-file",)
    assert set(info.files) == {"data/0000/hello.txt", "data/0000/dest_dir", "data/0000/filename"}


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (mender_artifact(tamper=True), IntegrityError, "differs from the manifest"),
        (
            mender_artifact(version={"format": "mender", "version": 2}),
            ArtifactFormatError,
            "version 3",
        ),
        (b"not a tar at all" * 100, ArtifactFormatError, "readable"),
        (
            tar_of([("version", b'{"format": "mender", "version": 3}')]),
            ArtifactFormatError,
            "needs a manifest and a header",
        ),
        (tar_of([("manifest", b"")]), ArtifactFormatError, "no leading 'version'"),
    ],
)
def test_refuses_broken_mender_artifacts(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        read_mender_artifact(io.BytesIO(data))


async def test_uploads_of_every_format(server: Server, artifact: BuiltArtifact) -> None:
    """Formats are told by content (Fleetcast, Mender) or named (file); a file upload needs
    its metadata; a tampered Mender artifact is refused; name+version stays unique."""
    native = await server.upload(artifact)
    assert native["format"] == "fleetcast" and native["manifest"]["signed"]["name"] == "acme-fw"
    mender = await server.admin.post("/api/v1/artifacts", content=mender_artifact())
    assert mender.status_code == 201 and mender.json()["format"] == "mender"
    again = await server.admin.post("/api/v1/artifacts", content=mender_artifact())
    assert again.status_code == 409
    tampered = await server.admin.post(
        "/api/v1/artifacts", content=mender_artifact("x-1", tamper=True)
    )
    assert tampered.status_code == 422 and tampered.json()["error"]["code"] == "invalid_artifact"
    missing = await server.admin.post("/api/v1/artifacts", params={"format": "file"}, content=b"x")
    assert missing.status_code == 422
    bad_name = await server.admin.post(
        "/api/v1/artifacts",
        params={
            "format": "file",
            "name": "n",
            "version": "1",
            "compatible": ["t"],
            "filename": "../x.swu",
        },
        content=b"x",
    )
    assert (
        bad_name.status_code == 422 and bad_name.json()["error"]["details"]["field"] == "filename"
    )
    swu = await upload_swu(server, b"payload")
    assert (swu["format"], swu["payload_type"], swu["signer_keyid"]) == ("file", "swu", "")
    listed = (await server.admin.get("/api/v1/artifacts")).json()["items"]
    assert sorted(a["format"] for a in listed) == ["file", "fleetcast", "mender"]


async def test_one_deployment_for_every_kind(server: Server, artifact: BuiltArtifact) -> None:
    """A deployment with alternatives: each device gets the artifact of its format, phases
    count all of them, and a device that nothing fits is skipped with the reason."""
    native = await server.upload(artifact)
    swu = await upload_swu(server, b"image")
    mender_row = (await server.admin.post("/api/v1/artifacts", content=mender_artifact())).json()
    agents = await server.fleet(2)
    ddi_id, ddi = await ddi_device(server, "mixed-1")
    stray_id, _ = await ddi_device(server, "mixed-2", device_type="other")
    mender = MenderDevice(server.http, {"mac": "m1"})
    await mender.auth()
    rows = (await server.admin.get("/api/v1/devices", params={"status": "pending"})).json()["items"]
    await server.admin.post(f"/api/v1/devices/{rows[0]['id']}/accept")
    await mender.auth()
    await mender.inventory({"device_type": "acme-mender"})
    response = await server.admin.post(
        "/api/v1/deployments",
        json={
            "name": "everyone",
            "artifact_id": native["id"],
            "alternatives": [swu["id"], mender_row["id"]],
            "target": {"device_types": ["acme-gw", "acme-swu", "acme-mender", "other"]},
            "phases": [{"count": 2}, {"percent": 100}],
        },
    )
    assert response.status_code == 201, response.text
    deployment = response.json()
    assert deployment["alternatives"] == [swu["id"], mender_row["id"]]
    members = {
        m["device_id"]: m
        for m in (await server.admin.get(f"/api/v1/deployments/{deployment['id']}/devices")).json()[
            "items"
        ]
    }
    assert members[ddi_id]["artifact_id"] == swu["id"]
    assert members[rows[0]["id"]]["artifact_id"] == mender_row["id"]
    assert {members[a.device_id or ""]["artifact_id"] for a in agents} == {native["id"]}
    assert members[stray_id]["state"] == "skipped"
    assert (
        members[stray_id]["last_message"]
        == "device type 'other' is not compatible with acme-swu 1.1.0"
    )
    assert [p["devices"] for p in deployment["phases"]] == [2, 2]
    assert deployment["counts"]["skipped"] == 1

    in_use = await server.admin.delete(f"/api/v1/artifacts/{swu['id']}")
    assert in_use.status_code == 409
    unknown = await server.admin.post(
        "/api/v1/deployments",
        json={
            "name": "x",
            "artifact_id": native["id"],
            "alternatives": ["nope"],
            "target": {"device_types": ["acme-gw"]},
        },
    )
    assert unknown.status_code == 422
    offered: dict[str, Any] = (await ddi.poll())["_links"]
    assert ("deploymentBase" in offered) == (members[ddi_id]["phase"] == 0)


async def test_target_tokens_are_for_ddi_devices(server: Server) -> None:
    [agent] = await server.fleet(1)
    response = await server.admin.post(f"/api/v1/devices/{agent.device_id}/target-token", json={})
    assert response.status_code == 422
    device_id, _ = await ddi_device(server, "tok-1")
    short = await server.admin.post(
        f"/api/v1/devices/{device_id}/target-token", json={"token": "short"}
    )
    assert short.status_code == 422
    chosen = await server.admin.post(
        f"/api/v1/devices/{device_id}/target-token", json={"token": "a-token-the-operator-chose"}
    )
    assert chosen.json() == {"token": "a-token-the-operator-chose"}
    bad_identity = await server.admin.post(
        "/api/v1/devices/preauthorize",
        json={"kind": "ddi", "identity": {"serial": "x"}, "device_type": "acme-swu"},
    )
    assert bad_identity.status_code == 422
    duplicate = await server.admin.post(
        "/api/v1/devices/preauthorize",
        json={"kind": "ddi", "identity": {"controller_id": "tok-1"}, "device_type": "acme-swu"},
    )
    assert duplicate.status_code == 409


def test_migrations_have_one_head() -> None:
    """Migrations written in parallel (deltas, compatibility) are chained, not forked."""
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    assert script.get_revision("0003").down_revision == "0002"
