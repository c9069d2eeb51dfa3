"""When the database is the problem: a clear 503 the device retries, never a 500.

Every pooled connection busy for longer than ``database_pool_timeout`` (a
burst of woken devices), or a connection the database dropped (a restart,
a failover): the request gets ``503 busy`` with ``Retry-After`` in the one
error shape, and the next request is served as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from fleetcast.server import Settings, prepare
from tests.pg import temporary_database
from tests.server.conftest import _pg_admin
from tests.server.harness import running_server


async def test_no_free_database_connection_is_a_503_in_the_error_shape(
    settings: Settings, admin_token: str
) -> None:
    tight = settings.model_copy(
        update={"database_pool_size": 1, "database_pool_overflow": 0, "database_pool_timeout": 0.2}
    )
    async with running_server(tight, admin_token) as server:
        async with server.state.db.engine.connect() as held:
            await held.exec_driver_sql("SELECT 1")
            response = await server.admin.get("/api/v1/devices")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.json()["error"]["code"] == "busy"
        assert (await server.admin.get("/api/v1/devices")).status_code == 200


@pytest.fixture
def pg_url() -> Iterator[str]:
    with temporary_database() as url:
        yield url


@pytest.mark.postgres
async def test_a_connection_the_database_dropped_costs_one_retry(
    tmp_path: Path, pg_url: str
) -> None:
    one = Settings(
        data_dir=tmp_path / "data",
        database_url=pg_url,
        database_pool_size=1,
        database_pool_overflow=0,
        # The background tasks stay off the one connection: the request meets it dead.
        engine_interval=3600,
        delta_interval=3600,
        last_seen_flush_interval=3600,
    )
    token = await asyncio.to_thread(prepare, one)
    assert token is not None
    async with running_server(one, token) as server:
        assert (await server.admin.get("/api/v1/devices")).status_code == 200
        async with server.state.db.engine.connect() as pooled:
            pid = (await pooled.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await pooled.rollback()
        # Another session kills the backend of the one pooled connection.
        admin = await _pg_admin()
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        lost = await server.admin.get("/api/v1/devices")
        assert lost.status_code == 503
        assert lost.json()["error"]["code"] == "busy"
        assert lost.headers["Retry-After"] == "1"
        assert (await server.admin.get("/api/v1/devices")).status_code == 200
