"""Families by district and phone: matching a referral (its reply code) and reading a text
look up the outreach open at a phone, which without this index read every family of the
district, or every open outreach, once per match (about 100 ms at 50,000 referrals).

Additive (an index only): the code of the revision before keeps working on a database at this
one (rolling upgrades, docs/operations.md), which `compatible_from` declares.

Revision ID: 0006_phone_lookup
Revises: 0005_trace
"""

from alembic import op

revision = "0006_phone_lookup"
down_revision = "0005_trace"
branch_labels = None
depends_on = None
# The oldest revision whose code may run on a database at this one (runtime/migrations.py).
compatible_from = "0005_trace"


def upgrade() -> None:
    op.create_index("ix_families_district_phone", "families", ["district_id", "phone"])


def downgrade() -> None:
    op.drop_index("ix_families_district_phone", table_name="families")
