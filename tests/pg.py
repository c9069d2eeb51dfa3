"""Throwaway PostgreSQL databases for tests that need the real thing.

Uses the server on 127.0.0.1:5432 (trust auth, user postgres). When it cannot
be reached the test is skipped with the reason, except in CI
(``FLEETCAST_REQUIRE_SERVICES=1``), where a missing service is a failure.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import pytest

PG_ADMIN_DSN = os.environ.get("FLEETCAST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _unavailable(reason: str) -> None:
    if os.environ.get("FLEETCAST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"PostgreSQL is required here but unavailable: {reason}")
    pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {reason}")


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def temporary_database() -> Iterator[str]:
    """Create an empty database; yield its SQLAlchemy URL; drop it afterwards."""
    name = f"fleetcast_test_{secrets.token_hex(6)}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as e:
        _unavailable(str(e))
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
