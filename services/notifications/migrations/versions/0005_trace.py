"""Messages keep the W3C trace context of the work that asked for them, so the send and every
report or reply about a message continue the referral's trace (issue 21). Empty when tracing is
off, and for messages made before.

Additive (nullable columns only): the code of the revision before keeps working on a
database at this one (rolling upgrades, docs/operations.md), which `compatible_from` declares.

Revision ID: 0005_trace
Revises: 0003_erasure
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_trace"
down_revision = "0003_erasure"
branch_labels = None
depends_on = None
# The oldest revision whose code may run on a database at this one (runtime/migrations.py).
compatible_from = "0003_erasure"


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("traceparent", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("tracestate", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("tracestate")
        batch.drop_column("traceparent")
