"""Outreach keeps its referral's correlation id and trace context, so the events a timer, a
reply or a coordinator's call emits about it stay in the referral's chain and trace (issue 21).
Rows made before have none: their later events start a chain of their own, as before.

Additive (nullable columns only): the code of the revision before keeps working on a
database at this one (rolling upgrades, docs/operations.md), which `compatible_from` declares.

Revision ID: 0005_trace
Revises: 0004_rosters
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_trace"
down_revision = "0004_rosters"
branch_labels = None
depends_on = None
# The oldest revision whose code may run on a database at this one (runtime/migrations.py).
compatible_from = "0004_rosters"


def upgrade() -> None:
    with op.batch_alter_table("outreach") as batch:
        batch.add_column(sa.Column("correlation_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("traceparent", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("tracestate", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outreach") as batch:
        batch.drop_column("tracestate")
        batch.drop_column("traceparent")
        batch.drop_column("correlation_id")
