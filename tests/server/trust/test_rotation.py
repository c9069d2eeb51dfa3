"""Key rotation: root keys through the root chain, online keys through a pending key.

A device ships with ``1.root.json``. Whatever the operator rotates, a python-tuf
client (``tuf.ngclient.Updater``) starting from that root must walk the chain
the server serves and verify what the server signs afterwards.
"""

from __future__ import annotations

from pathlib import Path

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Snapshot

from tests.factories import BuiltArtifact
from tests.server.trust.client import DeviceTufClient
from tests.server.trust.offline import next_version, online_key, sign, to_bytes
from tests.server.trust.operator import TufRepo


async def test_a_client_walks_the_root_chain_to_a_rotated_root(
    repo: TufRepo, tmp_path: Path
) -> None:
    """Root v2 drops one root key for a new one; v1 clients end up trusting v2."""
    [device] = await repo.server.fleet(1)
    v1 = repo.image_roots[0]
    early = DeviceTufClient(device, "image", to_bytes(v1), tmp_path / "early")
    await early.refresh()

    old, new = repo.keys.root[2], CryptoSigner.generate_ed25519()
    v2 = next_version(v1)
    v2.signed.revoke_key(old.public_key.keyid, "root")
    v2.signed.add_key(new.public_key, "root")
    # A threshold of the old keys (1 and 2) and of the new ones (1, 2 and the new key).
    sign(v2, [*repo.keys.root[:2], new])
    await repo.accepted("image/root", v2)

    late = DeviceTufClient(device, "image", to_bytes(v1), tmp_path / "late")
    await late.refresh()
    await early.refresh()
    for client in (early, late):
        assert client.trusted("root").signed.version == 2
    assert any(url.endswith("/2.root.json") for url in late.fetcher.urls)
    summary = (await repo.server.admin.get("/api/v1/tuf")).json()
    assert summary["image"]["root"]["version"] == 2


async def test_online_key_rotation_switches_when_a_root_lists_the_new_key(
    repo: TufRepo, artifact: BuiltArtifact, tmp_path: Path
) -> None:
    """Rotate the snapshot key: the server signs with the old key until root v2 lists the new."""
    server = repo.server
    [device] = await server.fleet(1)
    await server.upload(artifact)
    old_keyid = repo.online["snapshot"]["keyid"]

    rotated = await server.admin.post("/api/v1/tuf/online-keys/snapshot/rotate")
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    assert body["created"] and body["active"]["keyid"] == old_keyid
    pending = body["pending"]
    assert pending["keyid"] != old_keyid
    # Asking again keeps the pending key: a root listing it may be signed already.
    again = (await server.admin.post("/api/v1/tuf/online-keys/snapshot/rotate")).json()
    assert not again["created"] and again["pending"] == pending
    online = await repo.fetch_online_keys()
    assert online["snapshot"] == pending  # what a new root must list

    await repo.release(artifact)  # signed meanwhile with the still-active key
    snapshot = Metadata[Snapshot].from_bytes(
        (await server.admin.get("/api/v1/tuf/image/snapshot.json")).content
    )
    assert set(snapshot.signatures) == {old_keyid}

    v2 = next_version(repo.image_roots[0])
    v2.signed.revoke_key(old_keyid, "snapshot")
    v2.signed.add_key(online_key(pending), "snapshot")
    await repo.accepted("image/root", sign(v2, repo.keys.root[:2]))
    keys = (await server.admin.get("/api/v1/tuf")).json()["online_keys"]["snapshot"]
    assert keys == {"active": pending["keyid"], "pending": None}
    snapshot = Metadata[Snapshot].from_bytes(
        (await server.admin.get("/api/v1/tuf/image/snapshot.json")).content
    )
    assert set(snapshot.signatures) == {pending["keyid"]}

    client = DeviceTufClient(device, "image", to_bytes(repo.image_roots[0]), tmp_path / "image")
    await client.refresh()
    manifest = artifact.signed.manifest
    assert await client.target(f"{manifest.name}/{manifest.version}.fca") is not None


async def test_director_key_rotation_re_signs_device_metadata(
    repo: TufRepo, tmp_path: Path
) -> None:
    """Rotate the director key: after root v2, each device's director metadata uses the new key."""
    server = repo.server
    [device] = await server.fleet(1)
    client = DeviceTufClient(device, "director", to_bytes(repo.director_roots[0]), tmp_path / "d")
    await client.refresh()
    pending = (await server.admin.post("/api/v1/tuf/online-keys/director/rotate")).json()["pending"]
    v2 = next_version(repo.director_roots[0])
    for role in ("targets", "snapshot", "timestamp"):
        v2.signed.revoke_key(repo.online["director"]["keyid"], role)
        v2.signed.add_key(online_key(pending), role)
    # The director's roles must move together: one role on the new key alone is refused.
    half = next_version(repo.director_roots[0])
    half.signed.revoke_key(repo.online["director"]["keyid"], "targets")
    half.signed.add_key(online_key(pending), "targets")
    refused = await repo.put("director/root", sign(half, repo.keys.root[:2]))
    assert refused.status_code == 422, refused.text
    await repo.accepted("director/root", sign(v2, repo.keys.root[:2]))
    await client.refresh()
    timestamp = await device.get("/tuf/director/timestamp.json")
    assert set(Metadata.from_bytes(timestamp.content).signatures) == {pending["keyid"]}
