"""The Fleetcast update server (FastAPI, SQLAlchemy, Alembic).

Start it with::

    settings = Settings(data_dir=Path("fleetcast-data"))
    token = prepare(settings)          # migrations, secrets, first admin token
    uvicorn.run(create_app(settings))

Layout: ``api`` (HTTP: routes, dependencies, error shape), ``services``
(use cases), ``rollout`` (phases and the engine), ``db`` (rows, engine,
migrations), ``blobs`` and ``notify`` (storage and wake-ups behind small
interfaces). The agent never imports this package.
"""

from __future__ import annotations

from fleetcast.server.app import create_app, prepare
from fleetcast.server.settings import Settings

__all__ = ["Settings", "create_app", "prepare"]
