"""With an image repository, only released artifacts can be deployed (409 artifact_not_released)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import BuiltArtifact, make_artifact
from tests.server.harness import Server
from tests.server.trust.offline import artifact_target, next_version, sign
from tests.server.trust.operator import TufRepo


async def test_deployments_need_a_released_artifact_once_tuf_is_set_up(
    server: Server, artifact: BuiltArtifact, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """Before set-up anything deploys; after, only artifacts whose exact file was released."""
    await server.fleet(1)
    uploaded = await server.upload(artifact)
    assert (
        await server.admin.post(
            "/api/v1/deployments",
            json={
                "name": "before",
                "artifact_id": uploaded["id"],
                "target": {"device_types": ["acme-gw"]},
            },
        )
    ).status_code == 201
    repo = TufRepo(server)
    await repo.set_up()

    async def deploy(artifact_id: str) -> tuple[int, dict[str, object]]:
        response = await server.admin.post(
            "/api/v1/deployments",
            json={
                "name": "after",
                "artifact_id": artifact_id,
                "target": {"device_types": ["acme-gw"]},
            },
        )
        return response.status_code, response.json()

    status, body = await deploy(uploaded["id"])
    assert status == 409
    assert body["error"]["code"] == "artifact_not_released"
    assert body["error"]["details"]["target"] == "acme-fw/1.1.0.fca"

    # A bin naming the path with another file's hash does not release this file.
    impostor = make_artifact(tmp_path / "impostor", vendor_key, version="1.1.0", image=b"x" * 4096)
    entry = artifact_target(impostor.path, "acme-fw", "1.1.0", ["acme-gw"])
    role = repo.succinct.get_role_for_target(entry.path)
    wrong = next_version(repo.bins[role])
    wrong.signed.targets[entry.path] = entry
    await repo.accepted(f"image/{role}", sign(wrong, repo.keys.targets))
    repo.bins[role] = wrong
    assert (await deploy(uploaded["id"]))[0] == 409

    await repo.release(artifact)
    status, body = await deploy(uploaded["id"])
    assert status == 201, body
