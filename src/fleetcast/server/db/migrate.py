"""Run Alembic migrations programmatically (``script_location`` = the migrations package)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import fleetcast.server.migrations as _migrations

MIGRATIONS_DIR = Path(_migrations.__file__).parent
# Any constant: serialises concurrent migrations of several processes on PostgreSQL.
_MIGRATION_LOCK = 0x466C6D67


def alembic_config() -> Config:
    """An Alembic config pointing at our migrations, without any ini file."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _run(connection: Connection, action: str, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    config = alembic_config()
    config.attributes["connection"] = connection
    if action == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (default: the newest)."""
    async with engine.begin() as connection:
        await connection.run_sync(_run, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    """Migrate the database down to ``revision`` (default: empty)."""
    async with engine.begin() as connection:
        await connection.run_sync(_run, "downgrade", revision)
