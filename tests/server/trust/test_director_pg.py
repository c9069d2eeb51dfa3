"""On PostgreSQL, several server processes generating one device's director metadata at
once agree on every version: never two different metadata under one version number.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from fleetcast.server import Settings, prepare
from fleetcast.server.db.engine import Database
from fleetcast.server.db.models import Device
from fleetcast.server.db.trust_models import TufDirector
from fleetcast.server.trust import director
from tests.factories import BuiltArtifact
from tests.pg import temporary_database
from tests.server.harness import running_server
from tests.server.trust.operator import TufRepo, report_version

#: Server processes (one engine and pool each) and requests per round.
PROCESSES = 4
REQUESTS = 16


async def _round(dbs: list[Database], device_id: str, now: dt.datetime) -> set[tuple[int, bytes]]:
    async def fetch(db: Database) -> tuple[int, bytes]:
        async with db.sessions() as session:
            device = await session.get(Device, device_id)
            assert device is not None
            row = await director.current(session, device, now=now)
            return row.version, row.timestamp + row.snapshot + row.targets

    return set(await asyncio.gather(*(fetch(dbs[i % len(dbs)]) for i in range(REQUESTS))))


async def _scenario(url: str, tmp_path: Path, artifact: BuiltArtifact) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=url)
    token = await asyncio.to_thread(prepare, settings)
    assert token is not None
    async with running_server(settings, token) as server:
        repo = TufRepo(server)
        await repo.set_up()
        [device] = await server.fleet(1)
        assert device.device_id is not None
        uploaded = await server.upload(artifact)
        await repo.release(artifact)
        await server.deploy(uploaded["id"])
        dbs = [Database.connect(url) for _ in range(PROCESSES)]
        try:
            now = dt.datetime.now(dt.UTC)
            seen = []
            for change in ("first", "nonce", "half-life"):
                if change == "nonce":
                    _, answer = await report_version(device)
                    assert answer.status_code == 204, answer.text
                if change == "half-life":
                    now += dt.timedelta(hours=13)
                results = await _round(dbs, device.device_id, now)
                # Every concurrent request got the very same version and bytes.
                assert len(results) == 1, f"{change}: {sorted(v for v, _ in results)}"
                seen.append(next(iter(results))[0])
            assert seen == [1, 2, 3]
            async with server.state.db.sessions() as session:
                stored = list(
                    await session.scalars(
                        select(TufDirector.version).where(TufDirector.device_id == device.device_id)
                    )
                )
            assert sorted(stored) == [2, 3]  # the current version and the one before
        finally:
            for db in dbs:
                await db.close()


@pytest.mark.postgres
def test_concurrent_director_generation_agrees_on_one_version(
    tmp_path: Path, artifact: BuiltArtifact
) -> None:
    """Sixteen fetches over four engines, three times: one new version each time, identical."""
    with temporary_database() as url:
        asyncio.run(_scenario(url, tmp_path, artifact))
