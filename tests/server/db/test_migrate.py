"""Migrations: from empty to head and back, on SQLite and PostgreSQL, matching the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from fleetcast.server.db import migrate
from fleetcast.server.db.engine import make_engine
from fleetcast.server.db.models import Base

TABLES = {
    "devices",
    "device_tags",
    "enrollment_tokens",
    "admin_tokens",
    "server_secrets",
    "artifacts",
    "deployments",
    "deployment_devices",
    "device_events",
    "ddi_actions",
    "deltas",
    "audit_events",
    "tuf_keys",
    "tuf_metadata",
    "tuf_director",
    "tuf_nonces",
    "tuf_version_reports",
    "artifact_keys",
}


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


async def test_upgrade_matches_models_and_downgrade_empties(database_url: str) -> None:
    """The hand-written 0001 creates exactly what the ORM models describe; down removes it."""
    engine = make_engine(database_url)
    try:
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == TABLES
            assert await connection.run_sync(_diff) == []
        await migrate.upgrade(engine)  # already at head: nothing to do
        await migrate.downgrade(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == set()
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == TABLES
    finally:
        await engine.dispose()
