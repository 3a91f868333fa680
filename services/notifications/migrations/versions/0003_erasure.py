"""Erasure and retention: the families erased (ids only), so an outreach request already on
its way is dropped; the daily retention job claims its run in job_runs.

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
    op.create_table(
        "erased_families",
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("district_id", "family_id"),
    )
    create_job_runs_v1()


def downgrade() -> None:
    drop_job_runs_v1()
    op.drop_table("erased_families")
