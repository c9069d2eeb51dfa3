"""Alembic migrations of the server database (run by ``fleetcast.server.prepare``)."""
