"""Server configuration, read from ``FLEETCAST_*`` environment variables or given in code.

Zero-config by default: SQLite and a blob directory under ``data_dir``. No
secret lives here; the device-token key is generated into the database by
:func:`fleetcast.server.prepare`, so every process sharing the database
shares it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetcast.server.db.engine import PoolSize
from fleetcast.trust import SNAPSHOT_LIFETIME, TIMESTAMP_LIFETIME


class Settings(BaseSettings):
    """Everything the server can be told.

    Attributes:
        data_dir: Where the SQLite database and, by default, the blobs live.
        database_url: SQLAlchemy async URL; default ``sqlite+aiosqlite:///{data_dir}/fleetcast.db``.
        database_pool_size: Database connections each process keeps open.
        database_pool_overflow: Extra connections a process may open in a burst
            (PostgreSQL: keep ``workers`` x (size + overflow) under its
            ``max_connections``, 100 by default).
        database_pool_timeout: Seconds a request waits for a free connection
            before it fails with 503; a burst (a phase's devices all checking
            in at once) queues within it.
        blob_dir: Where artifact files are stored; default ``{data_dir}/blobs``.
        device_token_ttl: Lifetime of a device bearer token, in seconds.
        trusted_keys: Vendor public keys (PEM files). When any is set, an
            uploaded artifact must be signed by one of them.
        engine_interval: Seconds between two rollout-engine ticks.
        max_long_poll: Longest ``wait`` a device may ask for on ``/next``.
        auth_identity_burst: Authentication attempts one device identity may
            make at once (``POST /auth``); then ``auth_identity_per_minute``.
            0 turns the limit off.
        auth_identity_per_minute: Attempts one identity gets back per minute.
        auth_client_burst: Authentication attempts one client address may make
            at once (devices behind one NAT share it); 0 turns the limit off.
        auth_client_per_minute: Attempts one address gets back per minute.
        auth_clock_skew: Largest accepted distance between a device's auth
            timestamp and the server clock, in seconds.
        public_url: Base URL put in front of download links; relative links when unset.
        max_artifact_size: Largest artifact upload accepted, in bytes.
        workers: Server processes ``fleetcast server`` starts (uvicorn workers).
        blob_store: Where artifact files live: ``local`` (``blob_dir``) or
            ``s3://bucket[/prefix]`` (credentials from the usual ``AWS_*``
            environment variables).
        s3_endpoint_url: S3-compatible endpoint (MinIO, Ceph, ...); AWS when unset.
        s3_region: Region of the bucket.
        presign_expiry: Lifetime of a presigned S3 download URL, in seconds.
        accel_redirect_prefix: When set (local blobs behind nginx), downloads
            answer with ``X-Accel-Redirect: {prefix}/{blob path}`` and nginx
            sends the bytes.
        mqtt_url: ``mqtt://[user:password@]host[:port]`` (or ``mqtts://``): publish
            a "check in now" notice on each affected device's topic.
        mqtt_topic_prefix: Topics are ``{prefix}/devices/{device_id}/check-in``.
        last_seen_flush_interval: Seconds between two batched writes of
            devices' last-seen times (idle polls do not write).
        idle_cache_size: Devices each process remembers as accepted and idle,
            so their unchanged ``/next`` is answered without the database
            (``fleetcast.server.answers``); 0 turns it off.
        idle_cache_ttl: Seconds such an entry is trusted; notifications drop it
            at once (and all of them after a lost PostgreSQL notification
            connection), this bounds a missed one. Must exceed the devices'
            poll interval, or no poll ever finds its entry (default 15 min).
        ddi_tenant: The hawkBit tenant in DDI paths (``/{tenant}/controller/v1/...``),
            compared without regard to case.
        ddi_gateway_token: hawkBit ``GatewayToken`` (at least 16 characters): a
            client presenting it may act for any controller id, and an
            unknown one is registered (pending unless ``ddi_gateway_accept``).
            Unset: gateway authentication is off.
        ddi_gateway_accept: Accept devices registered through the gateway token
            at once (like an enrollment token) instead of leaving them pending.
        ddi_default_device_type: Device type of a DDI device registered through
            the gateway, until its ``configData`` names a ``device_type``.
        ddi_polling_interval: Seconds a DDI client is told to wait between polls.
        mender_download_ttl: Lifetime of a Mender download link, in seconds.
        delta_engine: Delta updates: ``auto`` (``hdiffpatch`` up to
            ``delta_small_image`` bytes, ``zstd`` above), ``hdiffpatch``
            (smallest), ``zstd`` (fastest) or ``off``. A ``delta-engine`` in an
            image payload's ``meta`` overrides it for that artifact.
        delta_small_image: Largest image ``auto`` gives to ``hdiffpatch``, in bytes.
        delta_workers: Threads one delta generation uses.
        delta_interval: Seconds between two looks for deltas to generate.
        delta_wait: Longest time ``/next`` withholds an update from a device
            whose delta is being generated; then it gets the full artifact.
        tuf_timestamp_lifetime: Validity of the image repository's ``timestamp``
            the server signs, in seconds; re-signed when less than half is left.
        tuf_snapshot_lifetime: Validity of its ``snapshot``, likewise.
    """

    model_config = SettingsConfigDict(env_prefix="FLEETCAST_", extra="ignore")

    data_dir: Path = Path("./fleetcast-data")
    database_url: str | None = None
    database_pool_size: int = Field(default=10, ge=1, le=1000)
    database_pool_overflow: int = Field(default=10, ge=0, le=1000)
    database_pool_timeout: float = Field(default=60.0, gt=0)
    blob_dir: Path | None = None
    device_token_ttl: int = Field(default=3600, ge=60)
    trusted_keys: list[Path] = Field(default_factory=list)
    engine_interval: float = Field(default=1.0, gt=0)
    max_long_poll: int = Field(default=60, ge=0)
    auth_clock_skew: int = Field(default=300, ge=0)
    auth_identity_burst: int = Field(default=10, ge=0)
    auth_identity_per_minute: float = Field(default=6.0, gt=0)
    auth_client_burst: int = Field(default=1000, ge=0)
    auth_client_per_minute: float = Field(default=6000.0, gt=0)
    public_url: str | None = None
    max_artifact_size: int = Field(default=8 * 1024**3, gt=0)
    workers: int = Field(default=1, ge=1)
    blob_store: str = "local"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    presign_expiry: int = Field(default=300, ge=10, le=7 * 24 * 3600)
    accel_redirect_prefix: str | None = None
    mqtt_url: str | None = None
    mqtt_topic_prefix: str = "fleetcast"
    last_seen_flush_interval: float = Field(default=10.0, gt=0)
    idle_cache_size: int = Field(default=200_000, ge=0)
    idle_cache_ttl: float = Field(default=900.0, ge=0)

    ddi_tenant: str = Field(default="default", min_length=1, max_length=64)
    ddi_gateway_token: str | None = Field(default=None, min_length=16, repr=False)
    ddi_gateway_accept: bool = False
    ddi_default_device_type: str = Field(default="hawkbit", min_length=1, max_length=128)
    ddi_polling_interval: int = Field(default=300, ge=1, le=86399)
    mender_download_ttl: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    delta_engine: Literal["auto", "hdiffpatch", "zstd", "off"] = "auto"
    delta_small_image: int = Field(default=2 * 1024**3, ge=0)
    delta_workers: int = Field(default=1, ge=1, le=64)
    delta_interval: float = Field(default=2.0, gt=0)
    delta_wait: float = Field(default=600.0, ge=0)
    tuf_timestamp_lifetime: int = Field(default=TIMESTAMP_LIFETIME, ge=60)
    tuf_snapshot_lifetime: int = Field(default=SNAPSHOT_LIFETIME, ge=60)

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        # Derived from data_dir so that setting data_dir alone moves everything.
        if self.database_url is None:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'fleetcast.db'}"
        if self.blob_dir is None:
            self.blob_dir = self.data_dir / "blobs"
        if self.public_url is not None:
            self.public_url = self.public_url.rstrip("/")
        if self.accel_redirect_prefix is not None:
            self.accel_redirect_prefix = "/" + self.accel_redirect_prefix.strip("/")
        if self.blob_store != "local" and not self.blob_store.startswith("s3://"):
            raise ValueError(
                f"blob_store must be 'local' or 's3://bucket[/prefix]', got {self.blob_store!r}"
            )
        if self.mqtt_url is not None and not self.mqtt_url.startswith(("mqtt://", "mqtts://")):
            raise ValueError(f"mqtt_url must start with mqtt:// or mqtts://, got {self.mqtt_url!r}")
        return self

    @property
    def pool(self) -> PoolSize:
        """The database pool each process keeps."""
        return PoolSize(
            self.database_pool_size, self.database_pool_overflow, self.database_pool_timeout
        )

    @property
    def resolved_database_url(self) -> str:
        """The database URL actually used (never None)."""
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'fleetcast.db'}"

    @property
    def resolved_blob_dir(self) -> Path:
        """The blob directory actually used (never None)."""
        return self.blob_dir or self.data_dir / "blobs"
