"""Compatibility APIs: device kinds, artifact formats, per-device artifacts, DDI actions.

- ``devices.kind`` (native, ddi, mender) and ``devices.target_token_hash``
  (a hawkBit DDI device's TargetToken, hashed);
- ``artifacts.format`` (fleetcast, file, mender);
- ``deployments.options`` (alternative artifacts, DDI action type and
  maintenance window);
- ``deployment_devices.artifact_id``: the artifact that device gets;
- ``ddi_actions``: the integer action ids hawkBit DDI clients need.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fleetcast.server.db.models import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="native"))
        batch.add_column(sa.Column("target_token_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(
            sa.Column("format", sa.String(16), nullable=False, server_default="fleetcast")
        )
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("options", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("deployment_devices") as batch:
        batch.add_column(sa.Column("artifact_id", sa.String(36), nullable=True))
        batch.create_foreign_key(
            "fk_deployment_devices_artifact_id_artifacts",
            "artifacts",
            ["artifact_id"],
            ["id"],
            ondelete="RESTRICT",
        )
        batch.create_index("ix_deployment_devices_artifact_id", ["artifact_id"])

    op.create_table(
        "ddi_actions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("deployment_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name="fk_ddi_actions_deployment_id_deployments",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_ddi_actions_device_id_devices",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ddi_actions"),
        sa.UniqueConstraint(
            "deployment_id", "device_id", name="uq_ddi_actions_deployment_id_device_id"
        ),
    )
    op.create_index("ix_ddi_actions_device_id", "ddi_actions", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_ddi_actions_device_id", table_name="ddi_actions")
    op.drop_table("ddi_actions")
    with op.batch_alter_table("deployment_devices") as batch:
        batch.drop_index("ix_deployment_devices_artifact_id")
        batch.drop_constraint("fk_deployment_devices_artifact_id_artifacts", type_="foreignkey")
        batch.drop_column("artifact_id")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("options")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("format")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("target_token_hash")
        batch.drop_column("kind")
