"""ORM rows (SQLAlchemy 2, typed). They are storage, not the API: routes convert them.

Indexes are chosen for a fleet of a million devices: devices by status and
type, tags through their own table, deployment membership by (deployment,
phase, state) for the engine's counts and by (device, state) for ``/next``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints so migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(36)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
        list[str]: JSON(),
    }


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (
        Index("ix_devices_status_created_at", "status", "created_at"),
        Index("ix_devices_device_type", "device_type"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    # What the device speaks: native (Fleetcast agent), ddi (hawkBit DDI), mender.
    kind: Mapped[str] = mapped_column(String(16), default="native", server_default="native")
    identity_json: Mapped[str] = mapped_column(Text)
    # sha256 of the canonical identity JSON: the unique lookup key at /auth.
    identity_hash: Mapped[str] = mapped_column(String(64), unique=True)
    public_key: Mapped[str] = mapped_column(Text)
    public_key_id: Mapped[str] = mapped_column(String(64))
    device_type: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    artifact_name: Mapped[str | None] = mapped_column(String(128))
    artifact_version: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column()
    # sha256 of a hawkBit DDI device's TargetToken (DDI devices only).
    target_token_hash: Mapped[str | None] = mapped_column(String(64))

    tags: Mapped[list[DeviceTag]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="DeviceTag.tag"
    )

    @property
    def tag_names(self) -> list[str]:
        return [t.tag for t in self.tags]


class DeviceTag(Base):
    """One tag of one device; a table (not JSON) so targeting by tag uses an index."""

    __tablename__ = "device_tags"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    tags: Mapped[list[str]] = mapped_column(default=list)
    expires_at: Mapped[dt.datetime] = mapped_column()
    uses: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AdminToken(Base):
    __tablename__ = "admin_tokens"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    # Only the sha256 of the token is stored; the plaintext is shown once.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(String(32), default="admin")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ServerSecret(Base):
    """Secrets generated on first start and shared by every server process."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(128))
    # fleetcast (.fca), file (opaque DDI file: .swu, .raucb), mender (mender-artifact).
    format: Mapped[str] = mapped_column(String(16), default="fleetcast", server_default="fleetcast")
    compatible: Mapped[list[str]] = mapped_column()
    payload_type: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    signer_keyid: Mapped[str] = mapped_column(String(64))
    # fleetcast: the signed envelope {"signed": ..., "signatures": [...]}, sent to
    # devices as is. Other formats: what the server read from the file or the
    # upload (file name, sha1/md5, Mender header), see fleetcast.server.compat.
    manifest: Mapped[dict[str, Any]] = mapped_column()
    blob_key: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_status_created_at", "status", "created_at"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    artifact_id: Mapped[str] = mapped_column(
        ForeignKey("artifacts.id", ondelete="RESTRICT"), index=True
    )
    target: Mapped[dict[str, Any]] = mapped_column()
    phases: Mapped[list[Any]] = mapped_column()
    allow_downgrade: Mapped[bool] = mapped_column(Boolean, default=False)
    # Alternative artifacts (other formats) and DDI action options; see
    # fleetcast.server.services.formats and fleetcast.server.compat.ddi_service.
    options: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    status: Mapped[str] = mapped_column(String(16))
    pause_reason: Mapped[str | None] = mapped_column(Text)
    current_phase: Mapped[int] = mapped_column(Integer, default=0)
    phase_started_at: Mapped[dt.datetime | None] = mapped_column()
    phase_completed_at: Mapped[dt.datetime | None] = mapped_column()
    # Failures of the current phase an operator accepted by resuming; only
    # failures beyond these can pause the phase again.
    failures_acknowledged: Mapped[int] = mapped_column(Integer, default=0)
    device_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column()

    artifact: Mapped[Artifact] = relationship(lazy="joined", innerjoin=True)


class DeploymentDevice(Base):
    """One device's membership and progress in one deployment."""

    __tablename__ = "deployment_devices"
    __table_args__ = (
        Index("ix_deployment_devices_deployment_phase_state", "deployment_id", "phase", "state"),
        Index("ix_deployment_devices_device_state", "device_id", "state"),
    )

    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    # None for skipped devices, which belong to no phase.
    phase: Mapped[int | None] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    # The artifact this device gets (its format fits the device's kind); None on
    # rows from before alternatives existed and on skipped devices: the deployment's.
    artifact_id: Mapped[str | None] = mapped_column(
        ForeignKey("artifacts.id", ondelete="RESTRICT"), index=True
    )
    state: Mapped[str] = mapped_column(String(24))
    progress: Mapped[int | None] = mapped_column(Integer)
    last_message: Mapped[str] = mapped_column(Text, default="")
    log_tail: Mapped[list[str]] = mapped_column(default=list)
    rolled_back: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # What the server sent this device (delta and full downloads, ranges
    # included) and what full images would have cost: set when it first downloads.
    bytes_shipped: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    bytes_full: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The highest status-report ``seq`` recorded for this membership (None: the device
    # sent none yet). A report at or below it arrived late and is ignored.
    report_seq: Mapped[int | None] = mapped_column(BigInteger)


class DeviceEvent(Base):
    """Append-only history: status reports and admission changes."""

    __tablename__ = "device_events"
    __table_args__ = (Index("ix_device_events_device_id_id", "device_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    deployment_id: Mapped[str | None] = mapped_column(ForeignKey("deployments.id"), index=True)
    artifact_name: Mapped[str | None] = mapped_column(String(128))
    artifact_version: Mapped[str | None] = mapped_column(String(128))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(24))
    message: Mapped[str] = mapped_column(Text, default="")
    log_tail: Mapped[list[str]] = mapped_column(default=list)
    rolled_back: Mapped[bool] = mapped_column(Boolean, default=False)


class DdiAction(Base):
    """A hawkBit DDI action: one device in one deployment, under the integer id DDI clients need.

    Created when the deployment is first offered to the device. ``closed``
    once the device sent a final feedback or acknowledged a cancel; feedback
    on a closed action is refused (410), as hawkBit does.
    """

    __tablename__ = "ddi_actions"
    __table_args__ = (UniqueConstraint("deployment_id", "device_id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    closed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Delta(Base):
    """A delta between two artifacts' root file system images, generated in the background.

    ``status``: ``pending`` (queued), ``ready`` (blob stored, offered),
    ``failed`` (``error`` says why; never offered). The blob is a
    ``fleetcast.delta`` file, content-addressed like artifacts.
    """

    __tablename__ = "deltas"
    __table_args__ = (
        UniqueConstraint("source_artifact_id", "target_artifact_id", "engine"),
        Index("ix_deltas_status_created_at", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    source_artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"))
    target_artifact_id: Mapped[str] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), index=True
    )
    engine: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    blob_key: Mapped[str | None] = mapped_column(String(256))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    source_size: Mapped[int | None] = mapped_column(BigInteger)
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    target_size: Mapped[int | None] = mapped_column(BigInteger)
    generation_ms: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column()


class AuditEvent(Base):
    """Append-only record of one management action: who did what to which object, and how it went.

    The actor is copied (id and name), not a foreign key: the record must
    outlive the API token that made it.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_actor_id_id", "actor_id", "id"),
        Index("ix_audit_events_action_id", "action", "id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[str] = mapped_column(ID)
    actor_name: Mapped[str] = mapped_column(String(128))
    client: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    outcome: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)


class ArtifactKey(Base):
    """The content key of an artifact encrypted per device (ADR 0008), sealed.

    ``sealed`` is the hex of ``nonce ‖ AES-256-GCM(key-encryption key, content key)``;
    the key-encryption key is a file in the data directory, never in the
    database or the blob store (:mod:`fleetcast.server.services.content_keys`).
    """

    __tablename__ = "artifact_keys"

    artifact_id: Mapped[str] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[str] = mapped_column(String(64))
    sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
