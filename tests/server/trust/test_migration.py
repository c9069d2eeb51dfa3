"""Migration 0005 creates exactly the TUF tables the models describe, and removes them."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from fleetcast.server.db import migrate
from fleetcast.server.db.engine import make_engine
from fleetcast.server.db.models import Base

TUF_TABLES = {"tuf_keys", "tuf_metadata", "tuf_director", "tuf_nonces", "tuf_version_reports"}


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_0005_matches_the_models_and_downgrades_to_0004(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        await migrate.upgrade(engine, "0005")
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) >= TUF_TABLES
            tuf_diff = [d for d in await connection.run_sync(_diff) if "tuf_" in repr(d)]
            assert tuf_diff == []
        await migrate.downgrade(engine, "0004")
        async with engine.connect() as connection:
            assert not TUF_TABLES & await connection.run_sync(_tables)
        await migrate.upgrade(engine, "0005")
    finally:
        await engine.dispose()
