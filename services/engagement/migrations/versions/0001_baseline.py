"""Baseline: the engagement schema as it was when migrations began (what `create_all` made
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
    _create_announcements()
    _create_contact_log()
    _create_families()
    _create_family_events()
    _create_invitations()
    _create_outreach()
    _create_students()
    _create_unassigned_replies()


def _create_announcements() -> None:
    op.create_table(
        "announcements",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cursor", sa.String(length=64), nullable=False),
        sa.Column("families_targeted", sa.Integer(), nullable=False),
        sa.Column("families_unreachable", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_announcements_district_id"), "announcements", ["district_id"], unique=False
    )
    op.create_index(op.f("ix_announcements_status"), "announcements", ["status"], unique=False)


def _create_contact_log() -> None:
    op.create_table(
        "contact_log",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("referral_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_contact_log_family_id"), "contact_log", ["family_id"], unique=False)


def _create_families() -> None:
    op.create_table(
        "families",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("preferred_language", sa.String(length=16), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("preferred_channel", sa.String(length=8), nullable=False),
        sa.Column("sms_consent", sa.Boolean(), nullable=False),
        sa.Column("email_consent", sa.Boolean(), nullable=False),
        sa.Column("sms_opted_out", sa.Boolean(), nullable=False),
        sa.Column("email_opted_out", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_families_district_id"), "families", ["district_id"], unique=False)
    op.create_index(op.f("ix_families_school_id"), "families", ["school_id"], unique=False)


def _create_family_events() -> None:
    op.create_table(
        "family_events",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("place", sa.String(length=200), nullable=False),
        sa.Column("languages", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_family_events_district_id"), "family_events", ["district_id"], unique=False
    )
    op.create_index(
        op.f("ix_family_events_school_id"), "family_events", ["school_id"], unique=False
    )


def _create_invitations() -> None:
    op.create_table(
        "invitations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("reachable", sa.Boolean(), nullable=False),
        sa.Column("response", sa.String(length=8), nullable=True),
        sa.Column("responded_via", sa.String(length=8), nullable=True),
        sa.Column("responded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attended", sa.Boolean(), nullable=False),
        sa.Column("invited_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", "family_id"),
    )
    op.create_index(op.f("ix_invitations_event_id"), "invitations", ["event_id"], unique=False)
    op.create_index(op.f("ix_invitations_family_id"), "invitations", ["family_id"], unique=False)


def _create_outreach() -> None:
    op.create_table(
        "outreach",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("referral_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("reply_code", sa.String(length=2), nullable=True),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_outreach_due", "outreach", ["status", "next_check_at"], unique=False)
    op.create_index(op.f("ix_outreach_family_id"), "outreach", ["family_id"], unique=False)
    op.create_index(op.f("ix_outreach_referral_id"), "outreach", ["referral_id"], unique=False)


def _create_students() -> None:
    op.create_table(
        "students",
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("student_ref", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("district_id", "student_ref"),
    )
    op.create_index(op.f("ix_students_family_id"), "students", ["family_id"], unique=False)
    op.create_index(op.f("ix_students_school_id"), "students", ["school_id"], unique=False)


def _create_unassigned_replies() -> None:
    op.create_table(
        "unassigned_replies",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("candidates", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outreach_id", sa.String(length=64), nullable=True),
        sa.Column("assigned_by", sa.String(length=128), nullable=True),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_unassigned_replies_district_id"),
        "unassigned_replies",
        ["district_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_unassigned_replies_school_id"), "unassigned_replies", ["school_id"], unique=False
    )
    op.create_index(
        op.f("ix_unassigned_replies_status"), "unassigned_replies", ["status"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_unassigned_replies_status"), table_name="unassigned_replies")
    op.drop_index(op.f("ix_unassigned_replies_school_id"), table_name="unassigned_replies")
    op.drop_index(op.f("ix_unassigned_replies_district_id"), table_name="unassigned_replies")
    op.drop_table("unassigned_replies")
    op.drop_index(op.f("ix_students_school_id"), table_name="students")
    op.drop_index(op.f("ix_students_family_id"), table_name="students")
    op.drop_table("students")
    op.drop_index(op.f("ix_outreach_referral_id"), table_name="outreach")
    op.drop_index(op.f("ix_outreach_family_id"), table_name="outreach")
    op.drop_index("ix_outreach_due", table_name="outreach")
    op.drop_table("outreach")
    op.drop_index(op.f("ix_family_events_school_id"), table_name="family_events")
    op.drop_index(op.f("ix_family_events_district_id"), table_name="family_events")
    op.drop_table("family_events")
    op.drop_index(op.f("ix_families_school_id"), table_name="families")
    op.drop_index(op.f("ix_families_district_id"), table_name="families")
    op.drop_table("families")
    op.drop_index(op.f("ix_contact_log_family_id"), table_name="contact_log")
    op.drop_table("contact_log")
    op.drop_index(op.f("ix_announcements_status"), table_name="announcements")
    op.drop_index(op.f("ix_announcements_district_id"), table_name="announcements")
    op.drop_table("announcements")
    drop_messaging_tables_v1()
