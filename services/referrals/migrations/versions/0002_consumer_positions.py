"""Each consumer's position on its stream, recorded with its effects (restore drill).

Additive: a copy of the code at 0001_baseline keeps working on a database at this revision
(rolling upgrades, docs/operations.md), which `compatible_from` declares.

Revision ID: 0002_consumer_positions
Revises: 0001_baseline
"""

from runtime.messaging_migrations import create_consumer_positions_v1, drop_consumer_positions_v1

revision = "0002_consumer_positions"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None
# The oldest revision whose code may run on a database at this one (runtime/migrations.py).
compatible_from = "0001_baseline"


def upgrade() -> None:
    create_consumer_positions_v1()


def downgrade() -> None:
    drop_consumer_positions_v1()
