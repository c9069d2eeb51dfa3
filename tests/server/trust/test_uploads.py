"""Setting up the image and director repositories: what the server accepts and refuses.

An operator runs ``fleetcast keys init``: it fetches the server's online keys,
signs both roots with 2 of 3 root keys, image targets delegating to hash bins,
and every empty bin, and uploads them. Anything python-tuf would not verify is
refused with 422 ``tuf_metadata_invalid`` and a message saying why.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata, Root, Snapshot, Timestamp

from tests.factories import BuiltArtifact
from tests.server.harness import Server
from tests.server.trust.offline import (
    BIT_LENGTH,
    OfflineKeys,
    artifact_target,
    empty_bin,
    expires,
    next_version,
    sign,
    to_bytes,
)
from tests.server.trust.operator import TufRepo


def _refused(response: Any, code: str = "tuf_metadata_invalid", status: int = 422) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    message: str = error["message"]
    return message


async def test_online_keys_are_created_once_and_are_tuf_keys(server: Server) -> None:
    """The operator's first call creates the online keys; later calls return the same ones."""
    first = (await server.admin.get("/api/v1/tuf/online-keys")).json()
    again = (await server.admin.get("/api/v1/tuf/online-keys")).json()
    assert first == again
    assert set(first) == {"snapshot", "timestamp", "director"}
    keyids = set()
    for body in first.values():
        assert body["keytype"] == body["scheme"] == "ed25519"
        # The key id is securesystemslib's default one: what the offline tooling derives too.
        raw = bytes.fromhex(body["keyval"]["public"])
        derived = SSlibKey.from_crypto(Ed25519PublicKey.from_public_bytes(raw))
        assert derived.keyid == body["keyid"]
        assert derived.to_dict() == {k: v for k, v in body.items() if k != "keyid"}
        keyids.add(body["keyid"])
    assert len(keyids) == 3
    summary = (await server.admin.get("/api/v1/tuf")).json()
    assert summary["image"]["set_up"] is False and summary["director"]["set_up"] is False
    assert {role: s["active"] for role, s in summary["online_keys"].items()} == {
        role: body["keyid"] for role, body in first.items()
    }


async def test_set_up_serves_uploads_byte_for_byte_and_signs_snapshot(repo: TufRepo) -> None:
    """After keys init, the summary shows both repositories; snapshot and timestamp verify."""
    server = repo.server
    summary = (await server.admin.get("/api/v1/tuf")).json()
    image = summary["image"]
    assert image["set_up"] and summary["director"]["set_up"]
    assert image["root"]["version"] == 1
    assert image["root"]["roles"]["root"]["threshold"] == 2
    assert image["bins"] == 2**BIT_LENGTH and image["targets"] == 0
    assert image["versions"]["snapshot"] == image["snapshot"]["version"]
    assert image["timestamp"]["expires"]

    # The CLI reads what it uploaded, exactly (the snapshot hashes these bytes).
    role = "bins-3"
    stored = await server.admin.get(f"/api/v1/tuf/image/{role}.json")
    assert stored.status_code == 200 and stored.content == to_bytes(repo.bins[role])
    assert (await server.admin.get("/api/v1/tuf/image/1.root.json")).content == to_bytes(
        repo.image_roots[0]
    )
    assert (await server.admin.get("/api/v1/tuf/director/root.json")).status_code == 200
    assert (await server.admin.get("/api/v1/tuf/director/targets.json")).status_code == 404
    assert (await server.admin.get("/api/v1/tuf/image/bins-99.json")).status_code == 404

    timestamp = Metadata[Timestamp].from_bytes(
        (await server.admin.get("/api/v1/tuf/image/timestamp.json")).content
    )
    root = repo.image_roots[0].signed
    root.verify_delegate("timestamp", timestamp.signed_bytes, timestamp.signatures)
    version = timestamp.signed.snapshot_meta.version
    snapshot_bytes = (await server.admin.get(f"/api/v1/tuf/image/{version}.snapshot.json")).content
    assert timestamp.signed.snapshot_meta.length == len(snapshot_bytes)
    assert timestamp.signed.snapshot_meta.hashes == {
        "sha256": hashlib.sha256(snapshot_bytes).hexdigest()
    }
    snapshot = Metadata[Snapshot].from_bytes(snapshot_bytes)
    root.verify_delegate("snapshot", snapshot.signed_bytes, snapshot.signatures)
    assert set(snapshot.signed.meta) == {"targets.json", *(f"{r}.json" for r in repo.bins)}
    listed = snapshot.signed.meta[f"{role}.json"]
    assert listed.length == len(stored.content) and listed.version == 1
    assert listed.hashes == {"sha256": hashlib.sha256(stored.content).hexdigest()}


async def test_a_release_re_signs_one_bin_then_snapshot_and_timestamp(
    repo: TufRepo, artifact: BuiltArtifact
) -> None:
    """Releasing an artifact: one bin v2 uploaded; a new snapshot lists it; the count shows it."""
    server = repo.server
    before = (await server.admin.get("/api/v1/tuf")).json()["image"]
    role = await repo.release(artifact)
    after = (await server.admin.get("/api/v1/tuf")).json()["image"]
    assert after["versions"][role] == 2 and after["targets"] == 1
    assert after["snapshot"]["version"] == before["snapshot"]["version"] + 1
    assert after["timestamp"]["version"] == before["timestamp"]["version"] + 1
    snapshot = Metadata[Snapshot].from_bytes(
        (await server.admin.get("/api/v1/tuf/image/snapshot.json")).content
    )
    assert snapshot.signed.meta[f"{role}.json"].version == 2
    # Uploads are audited like every management action.
    audit = (await server.admin.get("/api/v1/audit", params={"action": "tuf.upload_image"})).json()
    assert any(e["target_id"] == f"image/{role}" and e["outcome"] == "ok" for e in audit["items"])


async def test_bad_roots_are_refused(server: Server) -> None:
    """Below threshold, bad signature, wrong online keys, not consistent, out of order: 422."""
    keys = OfflineKeys()
    online = (await server.admin.get("/api/v1/tuf/online-keys")).json()

    async def put_root(md: Metadata[Root] | bytes, repo: str = "image") -> Any:
        return await server.admin.put(
            f"/api/v1/tuf/{repo}/root",
            content=md if isinstance(md, bytes) else to_bytes(md),
            headers={"Content-Type": "application/json"},
        )

    message = _refused(await put_root(sign(keys.image_root(online), keys.root[:1])))
    assert "threshold" in message
    tampered = sign(keys.image_root(online), keys.root[:2])
    tampered.signed.roles["root"].threshold = 1  # after signing
    assert "threshold" in _refused(await put_root(tampered))
    foreign = keys.image_root(online)
    foreign.signed.revoke_key(foreign.signed.roles["snapshot"].keyids[0], "snapshot")
    foreign.signed.add_key(CryptoSigner.generate_ed25519().public_key, "snapshot")
    assert "online snapshot key" in _refused(await put_root(sign(foreign, keys.root[:2])))
    # The director's roles must be the director key, not the image ones.
    swapped = keys.director_root({**online, "director": online["timestamp"]})
    assert "director key" in _refused(await put_root(sign(swapped, keys.root[:2]), "director"))
    not_consistent = keys.image_root(online)
    not_consistent.signed.consistent_snapshot = False
    assert "consistent_snapshot" in _refused(await put_root(sign(not_consistent, keys.root[:2])))
    expired = keys.image_root(online)
    expired.signed.expires = expires(-1)
    assert "expired" in _refused(await put_root(sign(expired, keys.root[:2])))
    assert "not valid TUF metadata" in _refused(await put_root(b"{not json"))
    assert (await server.admin.get("/api/v1/tuf")).json()["image"]["set_up"] is False

    good = sign(keys.image_root(online), keys.root[:2])
    assert (await put_root(good)).status_code == 200
    # A second upload of version 1, or a jump to 3: not the next root.
    assert "expected version 2" in _refused(await put_root(good))
    jump = next_version(next_version(good))
    assert "expected version 2" in _refused(await put_root(sign(jump, keys.root)))
    # Version 2 signed by the new root keys only (none of the old): refused.
    stranger = OfflineKeys()
    v2 = next_version(good)
    for keyid in list(v2.signed.roles["root"].keyids):
        v2.signed.revoke_key(keyid, "root")
    for signer in stranger.root:
        v2.signed.add_key(signer.public_key, "root")
    message = _refused(await put_root(sign(v2, stranger.root)))
    assert "root v1" in message
    audit = (await server.admin.get("/api/v1/audit", params={"action": "tuf.upload_root"})).json()
    assert {e["outcome"] for e in audit["items"]} == {"ok", "tuf_metadata_invalid"}


async def test_bad_targets_and_bins_are_refused(repo: TufRepo, artifact: BuiltArtifact) -> None:
    """Bins signed by the wrong key or below threshold, stale versions, misplaced targets: 422."""
    assert repo.targets is not None
    role = "bins-0"
    stranger = CryptoSigner.generate_ed25519()
    message = _refused(
        await repo.put(f"image/{role}", sign(next_version(repo.bins[role]), [stranger]))
    )
    assert "threshold" in message
    assert "not newer" in _refused(await repo.put(f"image/{role}", repo.bins[role]))
    assert "not newer" in _refused(await repo.put("image/targets", repo.targets))
    assert "not a hash bin" in _refused(
        await repo.put("image/bins-99", sign(empty_bin(2), repo.keys.targets))
    )
    # A target stored in a bin it does not hash to could never be found by a client.
    entry = artifact_target(artifact.path, "acme-fw", "1.1.0", ["acme-gw"])
    right = repo.succinct.get_role_for_target(entry.path)
    wrong = next(r for r in repo.bins if r != right)
    misplaced = next_version(repo.bins[wrong])
    misplaced.signed.targets[entry.path] = entry
    assert f"belongs in {right}" in _refused(
        await repo.put(f"image/{wrong}", sign(misplaced, repo.keys.targets))
    )
    # Targets signed by the root keys instead of the targets keys.
    assert "threshold" in _refused(
        await repo.put("image/targets", sign(next_version(repo.targets), repo.keys.root))
    )
    _refused(await repo.put("image/targets", repo.image_roots[0]))  # a root is not targets


async def test_targets_need_a_root_and_writes_need_the_right_scope(server: Server) -> None:
    """Uploading targets before the root is refused; read-only tokens read but never write."""
    keys = OfflineKeys()
    response = await server.admin.put(
        "/api/v1/tuf/image/targets",
        content=to_bytes(sign(keys.targets_md(), keys.targets)),
        headers={"Content-Type": "application/json"},
    )
    assert "upload the image root" in _refused(response)
    created = await server.admin.post(
        "/api/v1/tokens", json={"name": "viewer", "scope": "read-only"}
    )
    assert created.status_code == 201, created.text
    viewer = {"Authorization": f"Bearer {created.json()['token']}"}
    assert (await server.http.get("/api/v1/tuf", headers=viewer)).status_code == 200
    rotate = await server.http.post("/api/v1/tuf/online-keys/snapshot/rotate", headers=viewer)
    _refused(rotate, "forbidden", 403)
