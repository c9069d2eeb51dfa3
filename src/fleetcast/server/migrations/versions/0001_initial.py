"""Initial schema: devices, tokens, secrets, artifacts, deployments, history.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fleetcast.server.db.models import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, UTCDateTime(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("identity_json", sa.Text(), nullable=False),
        sa.Column("identity_hash", sa.String(64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("public_key_id", sa.String(64), nullable=False),
        sa.Column("device_type", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("artifact_name", sa.String(128), nullable=True),
        sa.Column("artifact_version", sa.String(128), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("last_seen_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("identity_hash", name="uq_devices_identity_hash"),
    )
    op.create_index("ix_devices_status_created_at", "devices", ["status", "created_at"])
    op.create_index("ix_devices_device_type", "devices", ["device_type"])

    op.create_table(
        "device_tags",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_device_tags_device_id_devices",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", "tag", name="pk_device_tags"),
    )
    op.create_index("ix_device_tags_tag", "device_tags", ["tag"])

    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        _ts("expires_at"),
        sa.Column("uses", sa.Integer(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_enrollment_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_enrollment_tokens_token_hash"),
    )

    op.create_table(
        "admin_tokens",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_admin_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_admin_tokens_token_hash"),
    )

    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("name", name="pk_server_secrets"),
    )

    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("compatible", sa.JSON(), nullable=False),
        sa.Column("payload_type", sa.String(32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("signer_keyid", sa.String(64), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("blob_key", sa.String(256), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
        sa.UniqueConstraint("name", "version", name="uq_artifacts_name_version"),
    )

    op.create_table(
        "deployments",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("artifact_id", sa.String(36), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("phases", sa.JSON(), nullable=False),
        sa.Column("allow_downgrade", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("pause_reason", sa.Text(), nullable=True),
        sa.Column("current_phase", sa.Integer(), nullable=False),
        _ts("phase_started_at", nullable=True),
        _ts("phase_completed_at", nullable=True),
        sa.Column("failures_acknowledged", sa.Integer(), nullable=False),
        sa.Column("device_count", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("finished_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["artifacts.id"],
            name="fk_deployments_artifact_id_artifacts",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
    )
    op.create_index("ix_deployments_artifact_id", "deployments", ["artifact_id"])
    op.create_index("ix_deployments_status_created_at", "deployments", ["status", "created_at"])

    op.create_table(
        "deployment_devices",
        sa.Column("deployment_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=True),
        sa.Column("last_message", sa.Text(), nullable=False),
        sa.Column("log_tail", sa.JSON(), nullable=False),
        sa.Column("rolled_back", sa.Boolean(), nullable=False),
        _ts("updated_at"),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name="fk_deployment_devices_deployment_id_deployments",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_deployment_devices_device_id_devices"
        ),
        sa.PrimaryKeyConstraint("deployment_id", "device_id", name="pk_deployment_devices"),
    )
    op.create_index(
        "ix_deployment_devices_deployment_phase_state",
        "deployment_devices",
        ["deployment_id", "phase", "state"],
    )
    op.create_index(
        "ix_deployment_devices_device_state", "deployment_devices", ["device_id", "state"]
    )

    op.create_table(
        "device_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("deployment_id", sa.String(36), nullable=True),
        sa.Column("artifact_name", sa.String(128), nullable=True),
        sa.Column("artifact_version", sa.String(128), nullable=True),
        _ts("at"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("log_tail", sa.JSON(), nullable=False),
        sa.Column("rolled_back", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_device_events_device_id_devices"
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name="fk_device_events_deployment_id_deployments",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_device_events"),
    )
    op.create_index("ix_device_events_device_id_id", "device_events", ["device_id", "id"])
    op.create_index("ix_device_events_deployment_id", "device_events", ["deployment_id"])


def downgrade() -> None:
    op.drop_table("device_events")
    op.drop_table("deployment_devices")
    op.drop_table("deployments")
    op.drop_table("artifacts")
    op.drop_table("server_secrets")
    op.drop_table("admin_tokens")
    op.drop_table("enrollment_tokens")
    op.drop_table("device_tags")
    op.drop_table("devices")
