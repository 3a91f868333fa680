"""Partner links: the signed, expiring, single-purpose links a matched partner's contact is
emailed (services/partners/links.py).

Additive (one new table): code at 0001_baseline keeps working on a database at this revision,
which `compatible_from` declares.

Revision ID: 0006_signin
Revises: 0002_consumer_positions
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_signin"
down_revision = "0002_consumer_positions"
branch_labels = None
depends_on = None
# The oldest revision whose code may run on a database at this one (runtime/migrations.py).
compatible_from = "0001_baseline"


def upgrade() -> None:
    op.create_table(
        "partner_links",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("partner_id", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_for", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_partner_links_referral_id", "partner_links", ["referral_id"])


def downgrade() -> None:
    op.drop_index("ix_partner_links_referral_id", table_name="partner_links")
    op.drop_table("partner_links")
