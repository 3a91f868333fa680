"""In-school supports: an organization may be one school's own staff support
(``partners.in_school_of``), and each of its capacity rows says so (``service_capacity.in_school``,
in the matching index so the candidate query still reads the index alone).

Additive: a copy of the code at 0002_consumer_positions (or later) keeps working on a database
at this revision (the new columns are nullable or have a server default), which
`compatible_from` declares.

Revision ID: 0007_in_school
Revises: 0006_signin
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_in_school"
down_revision = "0006_signin"
branch_labels = None
depends_on = None
# The oldest revision whose code may run on a database at this one (runtime/migrations.py).
compatible_from = "0002_consumer_positions"

_MATCH = ["district_id", "need", "school_id", "service_status", "partner_status", "reserved",
          "capacity", "partner_id", "languages_key", "grades_key", "service_id"]


def upgrade() -> None:
    op.add_column("partners", sa.Column("in_school_of", sa.String(length=64), nullable=True))
    op.add_column("service_capacity", sa.Column("in_school", sa.Boolean(), nullable=False,
                                                server_default=sa.false()))
    op.drop_index("ix_capacity_match", table_name="service_capacity")
    op.create_index("ix_capacity_match", "service_capacity", [*_MATCH, "in_school"])


def downgrade() -> None:
    op.drop_index("ix_capacity_match", table_name="service_capacity")
    op.create_index("ix_capacity_match", "service_capacity", _MATCH)
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later too): a batch copy of ``partners``
    # would drop the table that partner_services' foreign key names.
    op.drop_column("service_capacity", "in_school")
    op.drop_column("partners", "in_school_of")
