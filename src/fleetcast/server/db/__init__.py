"""Database: typed ORM rows, the async engine and session factory, and migrations."""

from __future__ import annotations

from fleetcast.server.db.engine import Database, make_engine
from fleetcast.server.db.models import Base

__all__ = ["Base", "Database", "make_engine"]
