"""The FastAPI application: ``create_app(settings)`` and ``prepare(settings)``.

``prepare`` readies storage once per start (directories, migrations, the
device-token key, a first admin token); ``create_app`` builds the app, whose
lifespan opens the database, the blob store, the notifier and the rollout
engine. Nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

import fleetcast
from fleetcast.core.signing import public_key_from_pem
from fleetcast.exceptions import UsageError, ValidationError
from fleetcast.server.answers import AnswerCache, RememberedPolls
from fleetcast.server.api.errors import install_error_handlers
from fleetcast.server.api.routes import (
    api_tokens,
    artifacts,
    audit,
    deployments,
    device,
    devices,
    fleet,
    tokens,
    tuf,
)
from fleetcast.server.blobs import LocalBlobStore, make_blob_store
from fleetcast.server.compat import ddi, manage, mender
from fleetcast.server.console import console_files
from fleetcast.server.db import migrate
from fleetcast.server.db.engine import Database
from fleetcast.server.lastseen import FlushBeforeReads, LastSeen
from fleetcast.server.notify import LocalNotifier, Notifier
from fleetcast.server.priming import OfferPrimer
from fleetcast.server.ratelimit import AuthRateLimits, TokenBuckets
from fleetcast.server.rollout.engine import RolloutEngine
from fleetcast.server.runtime import ServerState
from fleetcast.server.services import credentials
from fleetcast.server.services.admission import AdmissionPolicy
from fleetcast.server.services.deltas import DeltaWorker
from fleetcast.server.settings import Settings
from fleetcast.server.trust.refresh import TufRefresher


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


#: Long-poll re-check when notifications cannot be lost (one process, or LISTEN/NOTIFY):
#: only a safety net, so that a hundred thousand waiting devices cost few queries.
RELIABLE_RECHECK_SECONDS = 15.0
#: Long-poll re-check when they can (several processes on SQLite share no notifier).
FALLBACK_RECHECK_SECONDS = 1.0


@contextlib.asynccontextmanager
async def open_notifier(settings: Settings, db: Database) -> AsyncIterator[Notifier]:
    """The notifier for these settings, running for the duration of the block.

    PostgreSQL: ``LISTEN/NOTIFY`` across processes; SQLite: in-process. With
    ``mqtt_url``, notifications are also published to the devices' topics.
    """
    async with contextlib.AsyncExitStack() as stack:
        notifier: Notifier
        if db.dialect == "postgresql":
            from fleetcast.server.pgnotify import PgNotifier, asyncpg_dsn

            pg = PgNotifier(
                asyncpg_dsn(settings.resolved_database_url), recheck=RELIABLE_RECHECK_SECONDS
            )
            await pg.start()
            stack.push_async_callback(pg.close)
            notifier = pg
        else:
            single = settings.workers == 1
            notifier = LocalNotifier(
                recheck=RELIABLE_RECHECK_SECONDS if single else FALLBACK_RECHECK_SECONDS
            )
        if settings.mqtt_url:
            from fleetcast.server.mqtt import MqttNotifier, MqttPublisher

            publisher = MqttPublisher(settings.mqtt_url, topic_prefix=settings.mqtt_topic_prefix)
            await publisher.start()
            stack.push_async_callback(publisher.close)
            notifier = MqttNotifier(notifier, publisher)
        yield notifier


def create_app(settings: Settings) -> FastAPI:
    """Build the server application for ``settings`` (call :func:`prepare` first).

    Raises:
        UsageError: at startup, when a trusted key cannot be read or the
            database was not prepared.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        trusted_keys = load_trusted_keys(settings)
        db = Database.connect(settings.resolved_database_url, settings.pool)
        background = contextlib.AsyncExitStack()
        try:
            try:
                async with db.sessions() as session:
                    signer = await credentials.load_device_token_signer(session)
            except DBAPIError as e:
                raise UsageError(
                    f"cannot read the server database ({e.orig}); "
                    "is it reachable, and was prepare() called?"
                ) from e
            blobs = make_blob_store(settings)
            if isinstance(blobs, LocalBlobStore):
                blobs.ensure()
            notifier = await background.enter_async_context(open_notifier(settings, db))
            engine = RolloutEngine(db, notifier, interval=settings.engine_interval)
            last_seen = LastSeen(db, interval=settings.last_seen_flush_interval)
            delta_worker = DeltaWorker(db, blobs, settings, notifier)
            # Without a notifier shared by every process (several SQLite workers),
            # a process would not hear of changes made by another: no cache.
            shared = db.dialect == "postgresql" or settings.workers == 1
            answers = AnswerCache(
                size=settings.idle_cache_size if shared else 0, ttl=settings.idle_cache_ttl
            )
            notifier.add_listener(answers.invalidate)
            primer = OfferPrimer(db, answers, settings)
            # After the memory's own listener: a read starts once the old answers are gone.
            notifier.add_listener(primer.on_notification)
            background.push_async_callback(primer.close)
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
                    rate_limits=AuthRateLimits(
                        per_client=TokenBuckets(
                            settings.auth_client_burst, settings.auth_client_per_minute
                        ),
                        per_identity=TokenBuckets(
                            settings.auth_identity_burst, settings.auth_identity_per_minute
                        ),
                    ),
                ),
                trusted_keys=trusted_keys,
                last_seen=last_seen,
                deltas=delta_worker,
                answers=answers,
                primer=primer,
            )
            tasks = [
                asyncio.create_task(engine.run(), name="fleetcast-rollout-engine"),
                asyncio.create_task(last_seen.run(), name="fleetcast-last-seen"),
                asyncio.create_task(delta_worker.run(), name="fleetcast-delta-worker"),
                asyncio.create_task(TufRefresher(db, settings).run(), name="fleetcast-tuf-refresh"),
            ]
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            await background.aclose()
            await db.close()

    app = FastAPI(
        title="Fleetcast",
        version=fleetcast.__version__,
        description="Over-the-air updates for fleets of Linux devices: "
        "the device API and the management API.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # A remembered device's poll is answered from memory before routing (fleetcast.server.answers).
    app.add_middleware(RememberedPolls, path=f"{device.router.prefix}/next")
    # Deployment statistics include this process's batched download sums.
    app.add_middleware(FlushBeforeReads, prefix="/api/v1/")
    for module in (device, devices, artifacts, deployments, tokens, api_tokens, fleet, audit, tuf):
        app.include_router(module.router)
    app.include_router(tuf.device_router)
    # Compatibility APIs for existing fleets (hawkBit DDI, Mender) and their management.
    for compat in (manage, mender, ddi):
        app.include_router(compat.router)
    # The web console: static files calling the management API above.
    app.mount("/ui", console_files(), name="console")
    return app


#: ``fleetcast server --workers N`` hands the settings to its worker processes here (JSON).
SETTINGS_ENV = "FLEETCAST_SETTINGS_JSON"


def create_app_from_environment() -> FastAPI:
    """The app of one worker process of ``fleetcast server --workers N`` (uvicorn factory).

    Raises:
        UsageError: the settings variable is missing.
    """
    text = os.environ.get(SETTINGS_ENV)
    if text is None:
        raise UsageError(f"{SETTINGS_ENV} is not set; start workers with `fleetcast server`")
    return create_app(Settings.model_validate_json(text))


async def _prepare(settings: Settings) -> str | None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.blob_store == "local":
        LocalBlobStore(settings.resolved_blob_dir).ensure()
    db = Database.connect(settings.resolved_database_url, settings.pool)
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
