"""Delta updates: the ``deltas`` table and bytes shipped per deployment member.

- ``deltas``: one generated (or queued, or failed) delta per source artifact,
  target artifact and engine, with its blob, size and source image;
- ``deployment_devices.bytes_shipped`` / ``bytes_full``: what the server sent
  each device in a deployment, and what full images would have cost.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fleetcast.server.db.models import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deltas",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("source_artifact_id", sa.String(36), nullable=False),
        sa.Column("target_artifact_id", sa.String(36), nullable=False),
        sa.Column("engine", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("blob_key", sa.String(256), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("source_size", sa.BigInteger(), nullable=True),
        sa.Column("source_sha256", sa.String(64), nullable=True),
        sa.Column("target_size", sa.BigInteger(), nullable=True),
        sa.Column("generation_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["source_artifact_id"],
            ["artifacts.id"],
            name="fk_deltas_source_artifact_id_artifacts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target_artifact_id"],
            ["artifacts.id"],
            name="fk_deltas_target_artifact_id_artifacts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deltas"),
        sa.UniqueConstraint(
            "source_artifact_id",
            "target_artifact_id",
            "engine",
            name="uq_deltas_source_artifact_id_target_artifact_id_engine",
        ),
    )
    op.create_index("ix_deltas_status_created_at", "deltas", ["status", "created_at"])
    op.create_index("ix_deltas_target_artifact_id", "deltas", ["target_artifact_id"])
    with op.batch_alter_table("deployment_devices") as batch:
        batch.add_column(
            sa.Column("bytes_shipped", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("bytes_full", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("deployment_devices") as batch:
        batch.drop_column("bytes_full")
        batch.drop_column("bytes_shipped")
    op.drop_index("ix_deltas_target_artifact_id", table_name="deltas")
    op.drop_index("ix_deltas_status_created_at", table_name="deltas")
    op.drop_table("deltas")
