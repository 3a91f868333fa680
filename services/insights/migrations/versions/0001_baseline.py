"""Baseline: the insights store (one row per public event kept, and the digests' claims),
outbox and inbox included.

Revision ID: 0001_baseline
Revises:
"""

import sqlalchemy as sa
from alembic import op

from runtime.messaging_migrations import (
    create_consumer_positions_v1,
    create_messaging_tables_v1,
    drop_consumer_positions_v1,
    drop_messaging_tables_v1,
)

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables_v1()
    create_consumer_positions_v1()  # a new service: its baseline is today's messaging tables
    _create_insights_capacity()
    _create_insights_digests()
    _create_insights_families()
    _create_insights_family_events()
    _create_insights_messages()
    _create_insights_referrals()
    _create_insights_responses()
    _create_insights_steps()


def _create_insights_capacity() -> None:
    op.create_table(
        "insights_capacity",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=True),
        sa.Column("partner_id", sa.String(length=64), nullable=False),
        sa.Column("service_id", sa.String(length=64), nullable=False),
        sa.Column("capacity", sa.BigInteger(), nullable=False),
        sa.Column("reserved", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        "ix_insights_capacity_school",
        "insights_capacity",
        ["district_id", "school_id"],
        unique=False,
    )


def _create_insights_digests() -> None:
    op.create_table(
        "insights_digests",
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=False),
        sa.Column("week", sa.String(length=10), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("district_id", "school_id", "week"),
    )


def _create_insights_families() -> None:
    op.create_table(
        "insights_families",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        op.f("ix_insights_families_district_id"), "insights_families", ["district_id"], unique=False
    )
    op.create_index(
        op.f("ix_insights_families_family_id"), "insights_families", ["family_id"], unique=False
    )


def _create_insights_family_events() -> None:
    op.create_table(
        "insights_family_events",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=False),
        sa.Column("family_event_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        op.f("ix_insights_family_events_district_id"),
        "insights_family_events",
        ["district_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_insights_family_events_family_event_id"),
        "insights_family_events",
        ["family_event_id"],
        unique=False,
    )


def _create_insights_messages() -> None:
    op.create_table(
        "insights_messages",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=True),
        sa.Column("notification_id", sa.String(length=64), nullable=True),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("permanent", sa.Boolean(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        "ix_insights_messages_school",
        "insights_messages",
        ["district_id", "school_id"],
        unique=False,
    )


def _create_insights_referrals() -> None:
    op.create_table(
        "insights_referrals",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=False),
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("need", sa.String(length=32), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        op.f("ix_insights_referrals_referral_id"),
        "insights_referrals",
        ["referral_id"],
        unique=False,
    )
    op.create_index(
        "ix_insights_referrals_school",
        "insights_referrals",
        ["district_id", "school_id"],
        unique=False,
    )


def _create_insights_responses() -> None:
    op.create_table(
        "insights_responses",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=True),
        sa.Column("family_event_id", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        op.f("ix_insights_responses_district_id"),
        "insights_responses",
        ["district_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_insights_responses_family_event_id"),
        "insights_responses",
        ["family_event_id"],
        unique=False,
    )


def _create_insights_steps() -> None:
    op.create_table(
        "insights_steps",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=True),
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("partner_id", sa.String(length=64), nullable=True),
        sa.Column("partner_name", sa.String(length=200), nullable=True),
        sa.Column("service_id", sa.String(length=64), nullable=True),
        sa.Column("need", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        op.f("ix_insights_steps_referral_id"), "insights_steps", ["referral_id"], unique=False
    )
    op.create_index(
        "ix_insights_steps_school", "insights_steps", ["district_id", "school_id"], unique=False
    )


def downgrade() -> None:

    op.drop_index("ix_insights_steps_school", table_name="insights_steps")
    op.drop_index(op.f("ix_insights_steps_referral_id"), table_name="insights_steps")
    op.drop_table("insights_steps")
    op.drop_index(op.f("ix_insights_responses_family_event_id"), table_name="insights_responses")
    op.drop_index(op.f("ix_insights_responses_district_id"), table_name="insights_responses")
    op.drop_table("insights_responses")
    op.drop_index("ix_insights_referrals_school", table_name="insights_referrals")
    op.drop_index(op.f("ix_insights_referrals_referral_id"), table_name="insights_referrals")
    op.drop_table("insights_referrals")
    op.drop_index("ix_insights_messages_school", table_name="insights_messages")
    op.drop_table("insights_messages")
    op.drop_index(
        op.f("ix_insights_family_events_family_event_id"), table_name="insights_family_events"
    )
    op.drop_index(
        op.f("ix_insights_family_events_district_id"), table_name="insights_family_events"
    )
    op.drop_table("insights_family_events")
    op.drop_index(op.f("ix_insights_families_family_id"), table_name="insights_families")
    op.drop_index(op.f("ix_insights_families_district_id"), table_name="insights_families")
    op.drop_table("insights_families")
    op.drop_table("insights_digests")
    op.drop_index("ix_insights_capacity_school", table_name="insights_capacity")
    op.drop_table("insights_capacity")
    drop_consumer_positions_v1()
    drop_messaging_tables_v1()
