"""Baseline: the referrals schema as it was when migrations began (what `create_all` made
before them), outbox and inbox included.

Revision ID: 0001_baseline
Revises:
"""

import sqlalchemy as sa
from alembic import op

from runtime.messaging_migrations import create_messaging_tables_v1, drop_messaging_tables_v1

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables_v1()
    _create_known_families()
    _create_referral_audit()
    _create_referral_notes()
    _create_referral_timeline()
    _create_referrals()


def _create_known_families() -> None:
    op.create_table(
        "known_families",
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("district_id", "family_id"),
    )


def _create_referral_audit() -> None:
    op.create_table(
        "referral_audit",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("referral_id", sa.String(length=64), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=24), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index(
        op.f("ix_referral_audit_district_id"), "referral_audit", ["district_id"], unique=False
    )
    op.create_index(
        op.f("ix_referral_audit_referral_id"), "referral_audit", ["referral_id"], unique=False
    )


def _create_referral_notes() -> None:
    op.create_table(
        "referral_notes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("text", sa.String(length=4000), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index(
        op.f("ix_referral_notes_referral_id"), "referral_notes", ["referral_id"], unique=False
    )


def _create_referral_timeline() -> None:
    op.create_table(
        "referral_timeline",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("status_after", sa.String(length=24), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index(
        op.f("ix_referral_timeline_referral_id"), "referral_timeline", ["referral_id"], unique=False
    )


def _create_referrals() -> None:
    op.create_table(
        "referrals",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=False),
        sa.Column("student_ref", sa.String(length=128), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("need", sa.String(length=32), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("consent", sa.String(length=16), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("partner_id", sa.String(length=64), nullable=True),
        sa.Column("service_id", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("note", sa.String(length=2000), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("opened_by", sa.String(length=128), nullable=False),
        sa.Column("correlation_id", sa.String(length=64), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("family_contacted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("match_attempt", sa.Integer(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("in_service_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_reason", sa.String(length=64), nullable=True),
        sa.Column("consent_recorded_by", sa.String(length=128), nullable=True),
        sa.Column("consent_recorded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_contacted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("follow_up_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("follow_up_stage", sa.Integer(), nullable=False),
        sa.Column("follow_up_reason", sa.String(length=32), nullable=True),
        sa.Column("follow_up_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_progress_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("district_id", "idempotency_key", name="uq_referral_idempotency"),
    )
    op.create_index("ix_referrals_follow_up_due", "referrals", ["follow_up_due_at"], unique=False)
    op.create_index(
        "ix_referrals_open_need",
        "referrals",
        ["district_id", "student_ref", "need", "status"],
        unique=False,
    )
    op.create_index(
        "ix_referrals_school_status",
        "referrals",
        ["district_id", "school_id", "status"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_referrals_school_status", table_name="referrals")
    op.drop_index("ix_referrals_open_need", table_name="referrals")
    op.drop_index("ix_referrals_follow_up_due", table_name="referrals")
    op.drop_table("referrals")
    op.drop_index(op.f("ix_referral_timeline_referral_id"), table_name="referral_timeline")
    op.drop_table("referral_timeline")
    op.drop_index(op.f("ix_referral_notes_referral_id"), table_name="referral_notes")
    op.drop_table("referral_notes")
    op.drop_index(op.f("ix_referral_audit_referral_id"), table_name="referral_audit")
    op.drop_index(op.f("ix_referral_audit_district_id"), table_name="referral_audit")
    op.drop_table("referral_audit")
    drop_messaging_tables_v1()
