"""Erasure and retention: a family keeps when and by whom it was erased; the daily retention
job claims its run in job_runs.

Revision ID: 0003_erasure
Revises: 0002_consumer_positions
"""

import sqlalchemy as sa
from alembic import op

from runtime.daily_migrations import create_job_runs_v1, drop_job_runs_v1

revision = "0003_erasure"
down_revision = "0002_consumer_positions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Additive (expand): nullable columns an older copy neither reads nor writes.
    with op.batch_alter_table("families") as batch:
        batch.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("erased_by", sa.String(length=128), nullable=True))
    create_job_runs_v1()


def downgrade() -> None:
    drop_job_runs_v1()
    with op.batch_alter_table("families") as batch:
        batch.drop_column("erased_by")
        batch.drop_column("erased_at")
