"""The director: what each device must install, in per-device metadata signed online.

A device's director ``targets`` carries at most the one artifact its ``/next``
would offer, described by the *image* repository's target (path, length,
hashes), with the deployment in ``custom`` and the nonce of its last version
report in ``x-fleetcast``. The three roles share one version, bumped only
when something changes or half the lifetime is gone.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, Targets

from fleetcast.server.db.models import Device
from fleetcast.server.trust import director
from fleetcast.trust import CUSTOM_KEY, DIRECTOR_FIELD, target_path
from tests.factories import BuiltArtifact
from tests.server.harness import Server, SimDevice
from tests.server.trust.client import DeviceTufClient
from tests.server.trust.offline import to_bytes
from tests.server.trust.operator import TufRepo, report_version


async def _director_targets(device: SimDevice) -> Metadata[Targets]:
    """What a client would fetch: timestamp.json, then N.targets.json of that version."""
    timestamp = await device.get("/tuf/director/timestamp.json")
    assert timestamp.status_code == 200, timestamp.text
    version = Metadata.from_bytes(timestamp.content).signed.version
    targets = await device.get(f"/tuf/director/{version}.targets.json")
    assert targets.status_code == 200, targets.text
    md: Metadata[Targets] = Metadata.from_bytes(targets.content)
    return md


async def _current(server: Server, device_id: str, now: dt.datetime) -> Any:
    async with server.state.db.sessions() as session:
        row = await session.get(Device, device_id)
        assert row is not None
        return await director.current(session, row, now=now)


async def test_director_targets_follow_the_device_offer(
    repo: TufRepo, artifact: BuiltArtifact
) -> None:
    """No deployment: no target. A deployment of a released artifact: exactly that target."""
    server = repo.server
    first, second = await server.fleet(2)
    idle = await _director_targets(first)
    assert idle.signed.targets == {}
    assert idle.signed.unrecognized_fields[DIRECTOR_FIELD] == {
        "device_id": first.device_id,
        "nonce": None,
    }
    assert idle.signed.version == 1
    again = await _director_targets(first)
    assert again.signed.version == 1 and again.signed_bytes == idle.signed_bytes

    uploaded = await server.upload(artifact)
    role = await repo.release(artifact)
    deployment = await server.deploy(uploaded["id"], target={"device_ids": [first.device_id]})
    targets = await _director_targets(first)
    assert targets.signed.version == 2
    path = target_path("acme-fw", "1.1.0")
    [entry] = targets.signed.targets.values()
    image_entry = repo.bins[role].signed.targets[path]
    assert entry.path == path
    assert (entry.length, entry.hashes) == (image_entry.length, image_entry.hashes)
    assert entry.custom == {
        CUSTOM_KEY: {"deployment_id": deployment["id"], "allow_downgrade": False}
    }
    # The other device is not in the deployment: still nothing, under its own id.
    other = await _director_targets(second)
    assert other.signed.targets == {}
    assert other.signed.unrecognized_fields[DIRECTOR_FIELD]["device_id"] == second.device_id

    # Done: nothing to install any more, so the next version is empty again.
    for state in ("downloading", "installing", "rebooting", "success"):
        assert (await first.report(deployment["id"], state)).status_code == 204
    done = await _director_targets(first)
    assert done.signed.version == 3 and done.signed.targets == {}


async def test_an_unreleased_artifact_gives_no_director_target(
    server: Server, artifact: BuiltArtifact
) -> None:
    """Deployed before the image repository existed, the artifact appears once released."""
    [device] = await server.fleet(1)
    uploaded = await server.upload(artifact)
    await server.deploy(uploaded["id"])
    assert (await device.offer()) is not None
    repo = TufRepo(server)
    await repo.set_up()
    assert (await _director_targets(device)).signed.targets == {}
    await repo.release(artifact)
    released = await _director_targets(device)
    assert list(released.signed.targets) == [target_path("acme-fw", "1.1.0")]


async def test_versions_bump_on_a_new_nonce_and_at_half_life_only(repo: TufRepo) -> None:
    """A version report's nonce is echoed (one bump); time alone bumps after half a day."""
    server = repo.server
    [device] = await server.fleet(1)
    assert device.device_id is not None
    first = await _director_targets(device)
    nonce, answer = await report_version(device)
    assert answer.status_code == 204, answer.text
    echoed = await _director_targets(device)
    assert echoed.signed.version == first.signed.version + 1
    assert echoed.signed.unrecognized_fields[DIRECTOR_FIELD]["nonce"] == nonce

    now = dt.datetime.now(dt.UTC)
    same = await _current(server, device.device_id, now + dt.timedelta(hours=11))
    assert same.version == echoed.signed.version
    later = await _current(server, device.device_id, now + dt.timedelta(hours=13))
    assert later.version == echoed.signed.version + 1
    assert later.expires > now + dt.timedelta(hours=36)
    # Every role of a version is served under that version; older ones are pruned.
    assert (await device.get(f"/tuf/director/{later.version}.snapshot.json")).status_code == 200
    assert (
        await device.get(f"/tuf/director/{first.signed.version}.targets.json")
    ).status_code == 404


async def test_only_consistent_snapshot_names_are_served(repo: TufRepo) -> None:
    """Devices get N.root.json, timestamp.json, N.snapshot.json, N.targets.json, N.bins-XX.json."""
    [device] = await repo.server.fleet(1)
    assert (await device.get("/tuf/image/1.root.json")).content == to_bytes(repo.image_roots[0])
    assert (await device.get("/tuf/director/1.root.json")).content == to_bytes(
        repo.director_roots[0]
    )
    assert (await device.get("/tuf/image/1.bins-0.json")).status_code == 200
    for path in (
        "/tuf/image/root.json",
        "/tuf/image/snapshot.json",
        "/tuf/image/2.timestamp.json",
        "/tuf/image/9.root.json",
        "/tuf/image/../secrets",
        "/tuf/director/1.bins-0.json",
        "/tuf/director/snapshot.json",
        "/tuf/director/7.targets.json",
    ):
        response = await device.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    anonymous = await repo.server.http.get("/api/device/v1/tuf/image/1.root.json")
    assert anonymous.status_code == 401


async def test_a_tuf_client_finds_the_director_target_in_the_image_repository(
    repo: TufRepo, artifact: BuiltArtifact, tmp_path: Path
) -> None:
    """The integration proof: ngclient refreshes both repositories from these endpoints.

    The device trusts the shipped ``1.root.json`` of each repository, reports
    its version with a fresh nonce, refreshes the director, reads its one target
    and the echoed nonce, refreshes the image repository and finds the same
    target there, with the same length and hashes.
    """
    server = repo.server
    [device] = await server.fleet(1)
    uploaded = await server.upload(artifact)
    await repo.release(artifact)
    await server.deploy(uploaded["id"])

    nonce, answer = await report_version(device, target="acme-fw/1.0.0.fca", sha256="a" * 64)
    assert answer.status_code == 204, answer.text
    directing = DeviceTufClient(
        device, "director", to_bytes(repo.director_roots[0]), tmp_path / "director"
    )
    await directing.refresh()
    trusted = directing.trusted("targets")
    assert trusted.signed.unrecognized_fields[DIRECTOR_FIELD] == {
        "device_id": device.device_id,
        "nonce": nonce,
    }
    [path] = trusted.signed.targets
    wanted = await directing.target(path)
    assert wanted is not None

    image = DeviceTufClient(device, "image", to_bytes(repo.image_roots[0]), tmp_path / "image")
    await image.refresh()
    found = await image.target(path)
    assert found is not None
    assert (found.length, found.hashes) == (wanted.length, wanted.hashes)
    assert found.length == artifact.path.stat().st_size
    assert found.custom[CUSTOM_KEY]["compatible"] == ["acme-gw"]
    offer = await device.offer()
    assert offer is not None and offer.artifact_sha256 == found.hashes["sha256"]
    # The clients asked only for consistent-snapshot names.
    names = [u.rsplit("/", 1)[1] for u in directing.fetcher.urls + image.fetcher.urls]
    assert all(n == "timestamp.json" or n.split(".", 1)[0].isdigit() for n in names), names
    assert json.loads((tmp_path / "director" / "timestamp.json").read_bytes())["signed"]
