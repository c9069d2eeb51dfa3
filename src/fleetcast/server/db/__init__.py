"""Database: typed ORM rows, the async engine and session factory, and migrations."""

from __future__ import annotations

from fleetcast.server.db.engine import Database, make_engine
from fleetcast.server.db.models import Base

# Registers the TUF tables on Base.metadata (migrations compare against it).
from fleetcast.server.db import trust_models  # noqa: F401  # isort: skip

__all__ = ["Base", "Database", "make_engine"]
