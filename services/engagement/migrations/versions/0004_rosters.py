"""Rosters: what each OneRoster import made of the district's SIS people (roster_records), and
when a family left the roster (families.retired_at).

Additive: code from before it keeps working on a database at this revision (a new table it
ignores, a nullable column it leaves NULL), which `compatible_from` declares.

Revision ID: 0004_rosters
Revises: 0003_erasure
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_rosters"
down_revision = "0003_erasure"
branch_labels = None
depends_on = None
# The oldest revision whose code may run on a database at this one (runtime/migrations.py).
compatible_from = "0003_erasure"


def upgrade() -> None:
    op.create_table(
        "roster_records",
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("source_id", sa.String(length=128), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("district_id", "kind", "source_id"),
    )
    op.add_column("families", sa.Column("retired_at", sa.DateTime(timezone=True),
                                        nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("families") as batch:
        batch.drop_column("retired_at")
    op.drop_table("roster_records")
