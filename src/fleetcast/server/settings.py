"""Server configuration, read from ``FLEETCAST_*`` environment variables or given in code.

Zero-config by default: SQLite and a blob directory under ``data_dir``. No
secret lives here; the device-token key is generated into the database by
:func:`fleetcast.server.prepare`, so every process sharing the database
shares it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the server can be told.

    Attributes:
        data_dir: Where the SQLite database and, by default, the blobs live.
        database_url: SQLAlchemy async URL; default ``sqlite+aiosqlite:///{data_dir}/fleetcast.db``.
        blob_dir: Where artifact files are stored; default ``{data_dir}/blobs``.
        device_token_ttl: Lifetime of a device bearer token, in seconds.
        trusted_keys: Vendor public keys (PEM files). When any is set, an
            uploaded artifact must be signed by one of them.
        engine_interval: Seconds between two rollout-engine ticks.
        max_long_poll: Longest ``wait`` a device may ask for on ``/next``.
        auth_clock_skew: Largest accepted distance between a device's auth
            timestamp and the server clock, in seconds.
        public_url: Base URL put in front of download links; relative links when unset.
        max_artifact_size: Largest artifact upload accepted, in bytes.
    """

    model_config = SettingsConfigDict(env_prefix="FLEETCAST_", extra="ignore")

    data_dir: Path = Path("./fleetcast-data")
    database_url: str | None = None
    blob_dir: Path | None = None
    device_token_ttl: int = Field(default=3600, ge=60)
    trusted_keys: list[Path] = Field(default_factory=list)
    engine_interval: float = Field(default=1.0, gt=0)
    max_long_poll: int = Field(default=60, ge=0)
    auth_clock_skew: int = Field(default=300, ge=0)
    public_url: str | None = None
    max_artifact_size: int = Field(default=8 * 1024**3, gt=0)

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        # Derived from data_dir so that setting data_dir alone moves everything.
        if self.database_url is None:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'fleetcast.db'}"
        if self.blob_dir is None:
            self.blob_dir = self.data_dir / "blobs"
        if self.public_url is not None:
            self.public_url = self.public_url.rstrip("/")
        return self

    @property
    def resolved_database_url(self) -> str:
        """The database URL actually used (never None)."""
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'fleetcast.db'}"

    @property
    def resolved_blob_dir(self) -> Path:
        """The blob directory actually used (never None)."""
        return self.blob_dir or self.data_dir / "blobs"
