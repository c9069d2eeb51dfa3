"""Ordered status reports: ``deployment_devices.report_seq``.

The highest report sequence number recorded for each device in each
deployment. A report that carries a ``seq`` at or below it arrived late (its
client gave up and the device moved on) and is answered 204 without being
recorded. Null for rows written before, and for devices that send no ``seq``
(older agents, the DDI and Mender APIs): their reports are taken as they come.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployment_devices") as batch:
        batch.add_column(sa.Column("report_seq", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployment_devices") as batch:
        batch.drop_column("report_seq")
