"""The async engine and session factory, built from settings (never at import time).

SQLite gets WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for
every transaction: a deferred transaction that reads then writes can fail
at once with "database is locked" when another connection wrote in between,
which a busy timeout cannot cure. Taking the write lock up front makes the
single-writer nature of SQLite wait instead of fail. PostgreSQL needs none
of this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


@dataclass(frozen=True)
class PoolSize:
    """Connections kept open, extra ones allowed in a burst, seconds to wait for one."""

    size: int = 5
    overflow: int = 10
    timeout: float = 30.0


def make_engine(url: str, pool: PoolSize | None = None) -> AsyncEngine:
    """Create an async engine for ``url``, tuned for its backend."""
    pool = pool or PoolSize()
    sizes: dict[str, Any] = {
        "pool_size": pool.size,
        "max_overflow": pool.overflow,
        "pool_timeout": pool.timeout,
    }
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # No pre-ping: it cost a round trip per request (13 % of a rollout's
        # server time). A connection the database dropped fails its request
        # once (503, the device retries) and the pool replaces it.
        return create_async_engine(url, **sizes)
    in_memory = parsed.database in (None, "", ":memory:")
    engine = create_async_engine(url, connect_args={"timeout": 30}, **({} if in_memory else sizes))

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy (below) emit BEGIN itself instead of the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=30000",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@dataclass
class Database:
    """The engine and its session factory, owned by one app (or one ``prepare`` call)."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    @classmethod
    def connect(cls, url: str, pool: PoolSize | None = None) -> Database:
        engine = make_engine(url, pool)
        return cls(engine, async_sessionmaker(engine, expire_on_commit=False))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def close(self) -> None:
        await self.engine.dispose()
