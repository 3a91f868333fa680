"""The outbox and inbox tables every service's baseline migration creates (runtime/uow.py's
messaging_tables as they were at 0001_baseline). Frozen like any migration: a later change to
those tables is a new function here and a new migration in each service, never an edit."""

import sqlalchemy as sa
from alembic import op


def create_messaging_tables_v1() -> None:
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id"),
    )
    op.create_index(op.f("ix_inbox_applied_at"), "inbox", ["applied_at"], unique=False)
    op.create_table(
        "outbox",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"], unique=False)
    op.create_index("ix_outbox_unsent", "outbox", ["seq"], unique=False,
                    sqlite_where=sa.text("sent_at IS NULL"),
                    postgresql_where=sa.text("sent_at IS NULL"))


def drop_messaging_tables_v1() -> None:
    op.drop_index("ix_outbox_unsent", table_name="outbox",
                  sqlite_where=sa.text("sent_at IS NULL"),
                  postgresql_where=sa.text("sent_at IS NULL"))
    op.drop_index("ix_outbox_sent_at", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index(op.f("ix_inbox_applied_at"), table_name="inbox")
    op.drop_table("inbox")


def create_consumer_positions_v1() -> None:
    """0002_consumer_positions: where each durable consumer's database stands on its stream
    (runtime/positions.py). Additive: code from before it runs on a database that has it."""
    op.create_table(
        "consumer_positions",
        sa.Column("consumer", sa.String(length=128), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("stream_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer"),
    )


def drop_consumer_positions_v1() -> None:
    op.drop_table("consumer_positions")
