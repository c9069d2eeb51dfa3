"""TUF image repository and director (ADR 0008).

- ``tuf_keys``: the server's online ed25519 keys (snapshot, timestamp, director);
- ``tuf_metadata``: every version of every metadata file of both repositories;
- ``tuf_director``: per-device director metadata, one version per (device, version);
- ``tuf_nonces``: each device's current single-use nonce;
- ``tuf_version_reports``: each device's last accepted signed version report.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fleetcast.server.db.models import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _device_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["device_id"], ["devices.id"], name=f"fk_{table}_device_id_devices", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "tuf_keys",
        sa.Column("keyid", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("private_pem", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("retired_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("keyid", name="pk_tuf_keys"),
    )
    op.create_index("ix_tuf_keys_role", "tuf_keys", ["role"])
    op.create_table(
        "tuf_metadata",
        sa.Column("repo", sa.String(16), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("expires", UTCDateTime(), nullable=False),
        sa.Column("target_count", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("repo", "role", "version", name="pk_tuf_metadata"),
    )
    op.create_table(
        "tuf_director",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=True),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("timestamp", sa.LargeBinary(), nullable=False),
        sa.Column("snapshot", sa.LargeBinary(), nullable=False),
        sa.Column("targets", sa.LargeBinary(), nullable=False),
        sa.Column("expires", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        _device_fk("tuf_director"),
        sa.PrimaryKeyConstraint("device_id", "version", name="pk_tuf_director"),
    )
    op.create_table(
        "tuf_nonces",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        _device_fk("tuf_nonces"),
        sa.PrimaryKeyConstraint("device_id", name="pk_tuf_nonces"),
    )
    op.create_table(
        "tuf_version_reports",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("installed_target", sa.String(300), nullable=True),
        sa.Column("installed_sha256", sa.String(64), nullable=True),
        sa.Column("release_counter", sa.BigInteger(), nullable=False),
        sa.Column("reported_time", sa.BigInteger(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        _device_fk("tuf_version_reports"),
        sa.PrimaryKeyConstraint("device_id", name="pk_tuf_version_reports"),
    )


def downgrade() -> None:
    op.drop_table("tuf_version_reports")
    op.drop_table("tuf_nonces")
    op.drop_table("tuf_director")
    op.drop_table("tuf_metadata")
    op.drop_index("ix_tuf_keys_role", table_name="tuf_keys")
    op.drop_table("tuf_keys")
