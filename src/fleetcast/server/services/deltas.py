"""Delta updates on the server: which deltas rollouts need, making them, offering them.

Workflow (ADR 0005):

1. :func:`queue_needed` looks at the running deployments: for every member
   not yet working on its update (``pending`` or ``scheduled``) whose
   installed artifact has the deployment's name and another version that the
   server holds as a ``rootfs-image``, it queues one ``deltas`` row
   (source artifact, target artifact, engine) as ``pending``.
2. :class:`DeltaWorker` (a background task of the app) claims pending rows
   one at a time and generates them with :func:`fleetcast.delta.generate_delta`
   in a worker thread: both images are decoded from their artifacts into a
   temporary directory, the delta is generated and verified by applying it,
   then stored as a content-addressed blob. A delta that is not smaller than
   the full payload's compressed size is recorded as ``failed`` (not worth
   offering). Generation never runs on the event loop.
3. :func:`decide` adds a :class:`~fleetcast.core.wire.DeltaOffer` to a
   device's ``/next`` answer when a ready delta starts from exactly the
   version it reports, with an engine it reports it can apply, and (if it
   reports one) from the image sha256 it reports. If that delta is still
   being generated (or not queued yet: then it is queued on the spot), the
   offer is withheld for at most ``delta_wait`` seconds, so early devices
   are not sent full images for want of a few seconds. Every other device
   gets the full artifact only.
4. :func:`record_download` counts, per deployment member, the bytes the
   server sent (delta or full, ranges included) and what a full image would
   have cost (``bytes_shipped`` / ``bytes_full``).

The server holds no vendor key and cannot sign a delta: the device checks
the *result* against the signed manifest and falls back to the full artifact.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.artifact import ArtifactReader, decode_payload
from fleetcast.core.manifest import Payload, SignedManifest
from fleetcast.core.wire import DeltaOffer
from fleetcast.delta import ENGINES, DeltaParams, generate_delta
from fleetcast.exceptions import FleetcastError
from fleetcast.server.blobs import BlobStore
from fleetcast.server.db.engine import Database
from fleetcast.server.db.models import Artifact, Delta, Deployment, DeploymentDevice, Device, utcnow
from fleetcast.server.errors import NotFoundError
from fleetcast.server.notify import Notifier
from fleetcast.server.settings import Settings
from fleetcast.server.states import OFFERABLE, DeploymentStatus, RolloutState

log = logging.getLogger(__name__)

PENDING: Final = "pending"
RUNNING: Final = "running"
READY: Final = "ready"
FAILED: Final = "failed"
#: Inventory attributes a device reports about deltas.
ENGINES_ATTRIBUTE: Final = "fleetcast_delta_engines"
IMAGE_SHA256_ATTRIBUTE: Final = "fleetcast_rootfs_sha256"
_META_ENGINE: Final = "delta-engine"
_CHUNK: Final = 1024 * 1024


def delta_path(delta_id: str) -> str:
    return f"/api/device/v1/deltas/{delta_id}/download"


def image_payload(artifact: Artifact) -> Payload | None:
    """The ``rootfs-image`` payload of a Fleetcast artifact, or None.

    None as well for an encrypted image (ADR 0008): the server cannot read
    it, so no delta is made to or from it and its devices get the full artifact.
    """
    if getattr(artifact, "format", "fleetcast") != "fleetcast":
        return None
    if artifact.payload_type != "rootfs-image":
        return None
    payload = SignedManifest.from_dict(artifact.manifest).manifest.payloads[0]
    return None if payload.encryption is not None else payload


def choose_engine(settings: Settings, payload: Payload) -> str | None:
    """The engine for deltas *to* this image, or None for no deltas.

    The artifact's choice (``meta["delta-engine"]`` of its image, signed by
    the vendor) wins over the server's policy.
    """
    wanted = payload.meta.get(_META_ENGINE) or settings.delta_engine
    if wanted == "off":
        return None
    if wanted in ENGINES:
        return wanted
    return "hdiffpatch" if payload.size <= settings.delta_small_image else "zstd"


# --------------------------------------------------------------------------- queueing


async def _queue(session: AsyncSession, source_id: str, target_id: str, engine: str) -> bool:
    """Insert a pending delta unless one exists; return whether this call inserted it.

    ``ON CONFLICT DO NOTHING``: several ``/next`` handlers (or server
    processes) may queue the same pair at once; one row wins, no error.
    """
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(Delta)
        .values(
            id=str(uuid.uuid4()),
            source_artifact_id=source_id,
            target_artifact_id=target_id,
            engine=engine,
            status=PENDING,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(
            index_elements=["source_artifact_id", "target_artifact_id", "engine"]
        )
    )
    result = await session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def queue_needed(session: AsyncSession, settings: Settings) -> int:
    """Queue the deltas the running deployments' waiting members need; return how many.

    Commits the session.
    """
    member_artifact = func.coalesce(DeploymentDevice.artifact_id, Deployment.artifact_id)
    rows = (
        await session.execute(
            select(member_artifact, Device.artifact_name, Device.artifact_version)
            .select_from(DeploymentDevice)
            .join(Deployment, Deployment.id == DeploymentDevice.deployment_id)
            .join(Device, Device.id == DeploymentDevice.device_id)
            .where(
                Deployment.status == DeploymentStatus.RUNNING.value,
                DeploymentDevice.state.in_(
                    [RolloutState.PENDING.value, RolloutState.SCHEDULED.value]
                ),
                Device.artifact_version.is_not(None),
            )
            .distinct()
        )
    ).all()
    queued = 0
    for target_id, name, version in rows:
        target = await session.get(Artifact, target_id)
        if target is None or name != target.name or version == target.version:
            continue
        payload = image_payload(target)
        engine = None if payload is None else choose_engine(settings, payload)
        if engine is None:
            continue
        source = await session.scalar(
            select(Artifact).where(Artifact.name == name, Artifact.version == version)
        )
        if source is None or image_payload(source) is None:
            continue
        queued += await _queue(session, source.id, target.id, engine)
    await session.commit()
    return queued


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class _Built:
    path: Path
    source_size: int
    source_sha256: str
    target_size: int


def _extract_image(artifact_path: Path, out: Path) -> None:
    with artifact_path.open("rb") as fh, out.open("wb") as sink:
        reader = ArtifactReader(fh)
        reader.read_manifest()
        for entry, stream in reader.payloads():
            decode_payload(entry, stream, sink)


def _build(source: Path, target: Path, work: Path, params: DeltaParams) -> _Built:
    old, new, out = work / "old.img", work / "new.img", work / "image.delta"
    _extract_image(source, old)
    _extract_image(target, new)
    header = generate_delta(old, new, out, params)
    old.unlink()
    new.unlink()
    return _Built(out, header.source.size, header.source.sha256, header.target.size)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, _CHUNK):
            yield chunk


async def generate(db: Database, blobs: BlobStore, settings: Settings, delta_id: str) -> list[str]:
    """Generate one claimed delta and record the outcome (``ready`` or ``failed``).

    Returns the devices whose offer was withheld for it: now they get the
    delta, or (it failed) the full artifact.
    """
    async with db.sessions() as session:
        delta = await session.get(Delta, delta_id)
        if delta is None:
            return []
        source = await session.get(Artifact, delta.source_artifact_id)
        target = await session.get(Artifact, delta.target_artifact_id)
        if source is None or target is None:
            return []
        payload = image_payload(target)
        source_path, target_path = blobs.path(source.blob_key), blobs.path(target.blob_key)
        engine, what = delta.engine, f"{target.name} {source.version} -> {target.version}"
    assert payload is not None, "only image artifacts are queued"
    params = DeltaParams(engine, workers=settings.delta_workers)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="delta-", dir=settings.data_dir))
    values: dict[str, object]
    try:
        built = await asyncio.to_thread(_build, source_path, target_path, work, params)
        size = built.path.stat().st_size
        if size >= payload.compressed_size:
            raise _NotWorthIt(
                f"{size} bytes, not smaller than the full payload ({payload.compressed_size})"
            )
        stored = await blobs.put(_file_chunks(built.path), max_size=payload.compressed_size)
        values = {
            "status": READY,
            "blob_key": stored.key,
            "size": stored.size,
            "sha256": stored.sha256,
            "source_size": built.source_size,
            "source_sha256": built.source_sha256,
            "target_size": built.target_size,
        }
        log.info("delta %s (%s): %d bytes", what, engine, stored.size)
    except (FleetcastError, OSError, _NotWorthIt) as e:
        log.warning("delta %s (%s) failed: %s", what, engine, e)
        values = {"status": FAILED, "error": str(e)[:2000]}
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
    values["generation_ms"] = int((time.monotonic() - started) * 1000)
    values["finished_at"] = utcnow()
    async with db.sessions() as session:
        await session.execute(update(Delta).where(Delta.id == delta_id).values(**values))
        await session.commit()
        waiting = await session.scalars(
            select(DeploymentDevice.device_id)
            .join(Deployment, Deployment.id == DeploymentDevice.deployment_id)
            .join(Device, Device.id == DeploymentDevice.device_id)
            .where(
                Deployment.status == DeploymentStatus.RUNNING.value,
                DeploymentDevice.state == RolloutState.SCHEDULED.value,
                DeploymentDevice.phase <= Deployment.current_phase,
                func.coalesce(DeploymentDevice.artifact_id, Deployment.artifact_id)
                == delta.target_artifact_id,
                Device.artifact_name == target.name,
                Device.artifact_version == source.version,
            )
        )
        return list(waiting)


class _NotWorthIt(Exception):
    """The delta is not smaller than the full image: record it as failed."""


async def _claim(session: AsyncSession) -> str | None:
    candidate = await session.scalar(
        select(Delta.id).where(Delta.status == PENDING).order_by(Delta.created_at).limit(1)
    )
    if candidate is None:
        return None
    result = await session.execute(
        update(Delta).where(Delta.id == candidate, Delta.status == PENDING).values(status=RUNNING)
    )
    await session.commit()
    return candidate if result.rowcount == 1 else None  # type: ignore[attr-defined]


class DeltaWorker:
    """The background task that queues and generates deltas, one at a time."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        settings: Settings,
        notifier: Notifier | None = None,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._settings = settings
        self._notifier = notifier
        self._nudged = asyncio.Event()

    def nudge(self) -> None:
        """Look for work soon (a deployment was created)."""
        self._nudged.set()

    async def tick(self) -> int:
        """Queue what is needed, then generate every pending delta; return how many."""
        if self._settings.delta_engine == "off":
            return 0
        async with self._db.sessions() as session:
            await queue_needed(session, self._settings)
        done = 0
        while True:
            async with self._db.sessions() as session:
                delta_id = await _claim(session)
            if delta_id is None:
                return done
            waiting = await generate(self._db, self._blobs, self._settings, delta_id)
            if waiting and self._notifier is not None:
                # Their offer was withheld for this delta: it is their turn now.
                self._notifier.notify(waiting)
            done += 1

    async def run(self) -> None:
        """Tick until cancelled; an error in one tick is logged, not fatal."""
        restarted = False
        while True:
            try:
                if not restarted:
                    # A generation cut short by a restart is started again.
                    async with self._db.sessions() as session:
                        await session.execute(
                            update(Delta).where(Delta.status == RUNNING).values(status=PENDING)
                        )
                        await session.commit()
                    restarted = True
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delta worker tick failed; retrying next interval")
            try:
                async with asyncio.timeout(self._settings.delta_interval):
                    await self._nudged.wait()
            except TimeoutError:
                pass
            self._nudged.clear()


# --------------------------------------------------------------------------- offering


def device_engines(attributes: dict[str, Any] | None) -> set[str]:
    """The engines a device's attributes say it can apply (none: an agent without deltas)."""
    raw = (attributes or {}).get(ENGINES_ATTRIBUTE, "")
    return {e.strip() for e in str(raw).split(",") if e.strip() in ENGINES}


@dataclass(frozen=True)
class DeltaDecision:
    """What ``/next`` does about deltas for one device.

    ``offer``: add this delta to the offer. ``wait``: withhold the offer for
    now, a delta for this device is being generated (at most
    ``delta_wait`` seconds, then the full artifact is offered). ``queued``:
    a generation was just queued (nudge the worker).
    """

    offer: DeltaOffer | None = None
    wait: bool = False
    queued: bool = False


def delta_engine_for(
    installed: tuple[str | None, str | None],
    attributes: dict[str, Any] | None,
    artifact: Artifact,
    settings: Settings,
) -> str | None:
    """The engine of a delta a device could get to ``artifact``, or None: no delta,
    whatever the database holds (decided from the device's installed artifact
    (name, version), its attributes and the target alone)."""
    name, version = installed
    if name != artifact.name or not version or version == artifact.version:
        return None
    engines = device_engines(attributes)
    if not engines:
        return None
    payload = image_payload(artifact)
    preferred = None if payload is None else choose_engine(settings, payload)
    if preferred is None:
        return None
    # A device that cannot apply the preferred engine still gets a zstd delta.
    engine = preferred if preferred in engines else "zstd"
    return engine if engine in engines else None


async def decide(
    session: AsyncSession,
    device: Device,
    artifact: Artifact,
    settings: Settings,
    *,
    public_url: str | None = None,
) -> DeltaDecision:
    """Whether this device gets a delta to ``artifact``, must wait for one, or neither."""
    engine = delta_engine_for(
        (device.artifact_name, device.artifact_version), device.attributes, artifact, settings
    )
    version = device.artifact_version
    if engine is None or version is None:
        return DeltaDecision()
    source = await session.scalar(
        select(Artifact).where(Artifact.name == artifact.name, Artifact.version == version)
    )
    if source is None or image_payload(source) is None:
        return DeltaDecision()
    delta = await session.scalar(
        select(Delta).where(
            Delta.source_artifact_id == source.id,
            Delta.target_artifact_id == artifact.id,
            Delta.engine == engine,
        )
    )
    if delta is None:
        queued = await _queue(session, source.id, artifact.id, engine)
        return DeltaDecision(wait=settings.delta_wait > 0, queued=queued)
    if delta.status in (PENDING, RUNNING):
        waited = (utcnow() - delta.created_at).total_seconds()
        return DeltaDecision(wait=waited < settings.delta_wait)
    if delta.status != READY:
        return DeltaDecision()
    reported = (device.attributes or {}).get(IMAGE_SHA256_ATTRIBUTE)
    if reported and reported != delta.source_sha256:
        return DeltaDecision()
    assert delta.size is not None and delta.sha256 is not None
    assert delta.source_size is not None and delta.source_sha256 is not None
    return DeltaDecision(
        offer=DeltaOffer(
            url=(public_url or "") + delta_path(delta.id),
            size=delta.size,
            sha256=delta.sha256,
            engine=delta.engine,
            source_version=version,
            source_size=delta.source_size,
            source_sha256=delta.source_sha256,
        )
    )


async def get_ready(session: AsyncSession, delta_id: str) -> Delta:
    """Raises: NotFoundError: no such delta, or it is not ready."""
    delta = await session.get(Delta, delta_id)
    if delta is None or delta.status != READY or delta.blob_key is None:
        raise NotFoundError(f"delta {delta_id} not found", details={"delta_id": delta_id})
    return delta


async def list_deltas(session: AsyncSession) -> list[Delta]:
    """Every delta, newest first."""
    return list(await session.scalars(select(Delta).order_by(Delta.created_at.desc())))


# --------------------------------------------------------------------------- accounting


def served_length(range_header: str | None, size: int) -> int:
    """How many bytes a download answer carries: the whole file or one ``bytes=`` range."""
    if not range_header or not range_header.startswith("bytes=") or "," in range_header:
        return size
    first, _, last = range_header.removeprefix("bytes=").strip().partition("-")
    try:
        if not first:
            return min(size, int(last))
        start = int(first)
        end = min(size - 1, int(last)) if last else size - 1
    except ValueError:
        return size
    return max(0, end - start + 1)


async def record_download(
    session: AsyncSession, device: Device, artifact_id: str, served: int
) -> None:
    """Add ``served`` bytes to the device's membership in the deployment of ``artifact_id``.

    The first download of a member also books the full artifact's size as
    what the update would have cost without deltas. Commits the session.
    """
    member_artifact = func.coalesce(DeploymentDevice.artifact_id, Deployment.artifact_id)
    row = (
        await session.execute(
            select(DeploymentDevice, Artifact.size)
            .join(Deployment, Deployment.id == DeploymentDevice.deployment_id)
            .join(Artifact, Artifact.id == artifact_id)
            .where(
                DeploymentDevice.device_id == device.id,
                member_artifact == artifact_id,
                DeploymentDevice.state.in_([s.value for s in OFFERABLE]),
                Deployment.status.in_(
                    [DeploymentStatus.RUNNING.value, DeploymentStatus.PAUSED.value]
                ),
            )
            .order_by(Deployment.created_at)
            .limit(1)
        )
    ).first()
    if row is None:
        return
    member, full_size = row
    member.bytes_shipped = (member.bytes_shipped or 0) + served
    if not member.bytes_full:
        member.bytes_full = full_size
    await session.commit()


__all__ = [
    "ENGINES_ATTRIBUTE",
    "IMAGE_SHA256_ATTRIBUTE",
    "DeltaDecision",
    "DeltaWorker",
    "choose_engine",
    "decide",
    "delta_engine_for",
    "delta_path",
    "device_engines",
    "generate",
    "get_ready",
    "image_payload",
    "list_deltas",
    "queue_needed",
    "record_download",
    "served_length",
]
