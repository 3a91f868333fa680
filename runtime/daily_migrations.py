"""The ``job_runs`` table (runtime/daily.py) as the 0003_erasure migrations of the services
with a daily job create it. Frozen like any migration: a later change is a new function here
and a new migration in each of those services, never an edit."""

import sqlalchemy as sa
from alembic import op


def create_job_runs_v1() -> None:
    op.create_table(
        "job_runs",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_holder", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )


def drop_job_runs_v1() -> None:
    op.drop_table("job_runs")
