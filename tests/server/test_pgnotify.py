"""Several server processes on one PostgreSQL: wake-ups travel by LISTEN/NOTIFY.

Two apps on the same database stand for two server processes. A device
long-polls on one; an operator creates the deployment on the other. The
long-poll waits 8 s and the re-check is 15 s, so only a notification from
the other process can answer it with the offer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetcast.server import Settings, prepare
from fleetcast.server.app import RELIABLE_RECHECK_SECONDS
from fleetcast.server.pgnotify import MAX_PAYLOAD, PgNotifier, payloads
from tests.factories import BuiltArtifact
from tests.pg import temporary_database
from tests.server.harness import running_server


def test_payloads_stay_under_the_postgresql_limit() -> None:
    ids = [f"{i:036d}" for i in range(1000)]
    chunks = list(payloads(ids))
    assert len(chunks) > 1
    assert all(len(c.encode()) < MAX_PAYLOAD for c in chunks)
    assert [i for c in chunks for i in c.split(",")] == ids


@pytest.fixture
def pg_url() -> Iterator[str]:
    with temporary_database() as url:
        yield url


@pytest.mark.postgres
async def test_a_long_poll_wakes_for_a_deployment_made_by_another_process(
    tmp_path: Path, pg_url: str, artifact: BuiltArtifact
) -> None:
    a = Settings(data_dir=tmp_path / "a", database_url=pg_url, engine_interval=0.05)
    b = Settings(data_dir=tmp_path / "b", database_url=pg_url, engine_interval=0.05)
    token = await asyncio.to_thread(prepare, a)
    assert token is not None
    assert await asyncio.to_thread(prepare, b) is None  # same database: already prepared
    async with running_server(a, token) as first, running_server(b, token) as second:
        assert isinstance(first.state.notifier, PgNotifier)
        assert first.state.notifier.recheck == RELIABLE_RECHECK_SECONDS > 8
        uploaded = await second.upload(artifact)
        (device,) = await first.fleet(1)
        idle = await device.next()
        poll = asyncio.create_task(device.next(wait=8, etag=idle.headers["etag"]))
        while first.state.notifier.waiting == 0:  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
        deployment = await second.deploy(uploaded["id"])
        response = await poll
        assert response.status_code == 200
        assert response.json()["update"]["deployment_id"] == deployment["id"]


@pytest.mark.postgres
async def test_another_process_forgets_a_remembered_answer_before_the_push_goes_out(
    tmp_path: Path, pg_url: str, artifact: BuiltArtifact
) -> None:
    """A device told by MQTT to check in may reach any process: every process must
    have forgotten its "nothing to do" by the time the notice is published."""
    a = Settings(data_dir=tmp_path / "a", database_url=pg_url, engine_interval=0.05)
    b = Settings(data_dir=tmp_path / "b", database_url=pg_url, engine_interval=0.05)
    token = await asyncio.to_thread(prepare, a)
    assert token is not None
    async with running_server(a, token) as first, running_server(b, token) as second:
        assert isinstance(second.state.notifier, PgNotifier)
        uploaded = await second.upload(artifact)
        (device,) = await first.fleet(1)
        idle = await device.next()
        assert device.device_id is not None
        assert first.state.answers.get(device.device_id) is not None
        published = asyncio.Event()
        second.state.notifier.notify_then([device.device_id], published.set)
        await asyncio.wait_for(published.wait(), 10)
        for _ in range(100):  # the other process's listener, within milliseconds
            if first.state.answers.get(device.device_id) is None:
                break
            await asyncio.sleep(0.01)
        assert first.state.answers.get(device.device_id) is None
        deployment = await second.deploy(uploaded["id"])
        response = await device.next(etag=idle.headers["etag"])
        assert response.json()["update"]["deployment_id"] == deployment["id"]
