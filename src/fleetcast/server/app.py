"""The FastAPI application: ``create_app(settings)`` and ``prepare(settings)``.

``prepare`` readies storage once per start (directories, migrations, the
device-token key, a first admin token); ``create_app`` builds the app, whose
lifespan opens the database, the blob store, the notifier and the rollout
engine. Nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

import fleetcast
from fleetcast.core.signing import public_key_from_pem
from fleetcast.exceptions import UsageError, ValidationError
from fleetcast.server.api.errors import install_error_handlers
from fleetcast.server.api.routes import artifacts, deployments, device, devices, tokens
from fleetcast.server.blobs import LocalBlobStore
from fleetcast.server.db import migrate
from fleetcast.server.db.engine import Database
from fleetcast.server.notify import LocalNotifier
from fleetcast.server.rollout.engine import RolloutEngine
from fleetcast.server.runtime import ServerState
from fleetcast.server.services import credentials
from fleetcast.server.services.admission import AdmissionPolicy
from fleetcast.server.settings import Settings


def load_trusted_keys(settings: Settings) -> list[Ed25519PublicKey]:
    """Read the vendor public keys named in the settings.

    Raises:
        UsageError: a key file is missing or not an Ed25519 public key.
    """
    keys = []
    for path in settings.trusted_keys:
        try:
            keys.append(public_key_from_pem(path.read_bytes()))
        except (OSError, ValidationError) as e:
            raise UsageError(f"trusted key {path}: {e}") from e
    return keys


def create_app(settings: Settings) -> FastAPI:
    """Build the server application for ``settings`` (call :func:`prepare` first).

    Raises:
        UsageError: at startup, when a trusted key cannot be read or the
            database was not prepared.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        trusted_keys = load_trusted_keys(settings)
        db = Database.connect(settings.resolved_database_url)
        try:
            try:
                async with db.sessions() as session:
                    signer = await credentials.load_device_token_signer(session)
            except DBAPIError as e:
                raise UsageError(
                    f"cannot read the server database ({e.orig}); "
                    "is it reachable, and was prepare() called?"
                ) from e
            blobs = LocalBlobStore(settings.resolved_blob_dir)
            blobs.ensure()
            notifier = LocalNotifier()
            engine = RolloutEngine(db, notifier, interval=settings.engine_interval)
            app.state.fleetcast = ServerState(
                settings=settings,
                db=db,
                blobs=blobs,
                notifier=notifier,
                engine=engine,
                admission=AdmissionPolicy(
                    signer=signer,
                    token_ttl=settings.device_token_ttl,
                    clock_skew=settings.auth_clock_skew,
                ),
                trusted_keys=trusted_keys,
            )
            task = asyncio.create_task(engine.run(), name="fleetcast-rollout-engine")
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            await db.close()

    app = FastAPI(
        title="Fleetcast",
        version=fleetcast.__version__,
        description="Over-the-air updates for fleets of Linux devices: "
        "the device API and the management API.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (device, devices, artifacts, deployments, tokens):
        app.include_router(module.router)
    return app


async def _prepare(settings: Settings) -> str | None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    LocalBlobStore(settings.resolved_blob_dir).ensure()
    db = Database.connect(settings.resolved_database_url)
    try:
        await migrate.upgrade(db.engine)
        async with db.sessions() as session:
            await credentials.ensure_device_token_key(session)
            token = None
            if not await credentials.has_admin_token(session):
                token = await credentials.create_admin_token(session, name="initial admin token")
            await session.commit()
        return token
    finally:
        await db.close()


def prepare(settings: Settings) -> str | None:
    """Ready the storage; safe to call on every start.

    Creates the data and blob directories, migrates the database to the
    newest schema, creates the device-token key if missing, and creates an
    admin token if none exists.

    Call it from synchronous code (it runs its own event loop); from async
    code use ``await asyncio.to_thread(prepare, settings)``.

    Returns:
        The plaintext of a newly created admin token (shown once), or None.
    """
    return asyncio.run(_prepare(settings))
