"""Messages keep the W3C trace context of the work that asked for them, so the send and every
report or reply about a message continue the referral's trace (issue 21). Empty when tracing is
off, and for messages made before.

Revision ID: 0005_trace
Revises: 0001_baseline
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_trace"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("traceparent", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("tracestate", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("tracestate")
        batch.drop_column("traceparent")
