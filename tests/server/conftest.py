"""Server test fixtures: the app in process, on SQLite and on PostgreSQL.

Every test that uses ``server`` runs twice: against a SQLite file and
against a throwaway PostgreSQL database (``fleetcast_test_<hex>``, dropped
afterwards). Without PostgreSQL on 127.0.0.1:5432 the PostgreSQL runs are
skipped with a reason, unless ``FLEETCAST_REQUIRE_SERVICES=1`` makes that a
failure (CI).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.server import Settings, prepare
from tests.factories import BuiltArtifact, make_artifact
from tests.server.harness import Server, running_server

PG_HOST = "127.0.0.1:5432"
PG_ADMIN_DSN = f"postgresql://postgres@{PG_HOST}/postgres"


async def _pg_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as e:
        reason = f"PostgreSQL is not reachable on {PG_HOST} ({type(e).__name__}: {e})"
        if os.environ.get("FLEETCAST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}; FLEETCAST_REQUIRE_SERVICES=1 requires it")
        pytest.skip(reason)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fleetcast.db'}"
        return
    name = f"fleetcast_test_{secrets.token_hex(6)}"
    admin = await _pg_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+asyncpg://postgres@{PG_HOST}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Fast settings: the engine ticks every 50 ms."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        engine_interval=0.05,
        max_long_poll=10,
    )


@pytest.fixture
async def admin_token(settings: Settings) -> str:
    """Prepare storage like a first server start; the admin token it prints."""
    token = await asyncio.to_thread(prepare, settings)
    assert token is not None
    return token


@pytest.fixture
async def server(settings: Settings, admin_token: str) -> AsyncIterator[Server]:
    async with running_server(settings, admin_token) as srv:
        yield srv


@pytest.fixture
def artifact(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> BuiltArtifact:
    """acme-fw 1.1.0 for acme-gw devices, signed by the vendor key."""
    return make_artifact(tmp_path / "artifacts", vendor_key, version="1.1.0")
