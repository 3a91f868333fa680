"""Retention: the daily retention job claims its run in job_runs.

Revision ID: 0003_erasure
Revises: 0002_consumer_positions
"""

from runtime.daily_migrations import create_job_runs_v1, drop_job_runs_v1

revision = "0003_erasure"
down_revision = "0002_consumer_positions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_job_runs_v1()


def downgrade() -> None:
    drop_job_runs_v1()
