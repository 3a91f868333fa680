"""Baseline: the partners schema as it was when migrations began (what `create_all` made
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
    _create_family_languages()
    _create_partner_stats()
    _create_partners()
    _create_referral_requests()
    _create_partner_services()
    _create_service_capacity()


def _create_family_languages() -> None:
    op.create_table(
        "family_languages",
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("district_id", "family_id"),
    )


def _create_partner_stats() -> None:
    op.create_table(
        "partner_stats",
        sa.Column("partner_id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("declined", sa.Integer(), nullable=False),
        sa.Column("accept_seconds", sa.Float(), nullable=False),
        sa.Column("active", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("partner_id"),
    )


def _create_partners() -> None:
    op.create_table(
        "partners",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("languages", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hsds_id", sa.String(length=128), nullable=True),
        sa.Column("alternate_name", sa.String(length=200), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("email", sa.String(length=200), nullable=True),
        sa.Column("website", sa.String(length=500), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_partners_district_hsds", "partners", ["district_id", "hsds_id"], unique=False
    )
    op.create_index(op.f("ix_partners_district_id"), "partners", ["district_id"], unique=False)


def _create_referral_requests() -> None:
    op.create_table(
        "referral_requests",
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("need", sa.String(length=32), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=True),
        sa.Column("consent", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("service_id", sa.String(length=64), nullable=True),
        sa.Column("partner_id", sa.String(length=64), nullable=True),
        sa.Column("tried_partners", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("matched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("ever_matched", sa.Boolean(), nullable=False),
        sa.Column("last_result", sa.String(length=16), nullable=True),
        sa.Column("declines", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("referral_id"),
    )
    op.create_index(
        "ix_requests_report", "referral_requests", ["district_id", "opened_at"], unique=False
    )


def _create_partner_services() -> None:
    op.create_table(
        "partner_services",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("partner_id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("need", sa.String(length=32), nullable=False),
        sa.Column("schools", sa.JSON(), nullable=False),
        sa.Column("grades", sa.JSON(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("min_age", sa.Integer(), nullable=True),
        sa.Column("max_age", sa.Integer(), nullable=True),
        sa.Column("service_languages", sa.JSON(), nullable=False),
        sa.Column("languages_key", sa.String(length=200), nullable=False),
        sa.Column("grades_key", sa.String(length=64), nullable=False),
        sa.Column("hsds_id", sa.String(length=128), nullable=True),
        sa.Column("hsds", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_partner_services_district_id"), "partner_services", ["district_id"], unique=False
    )
    op.create_index(op.f("ix_partner_services_need"), "partner_services", ["need"], unique=False)
    op.create_index(
        op.f("ix_partner_services_partner_id"), "partner_services", ["partner_id"], unique=False
    )


def _create_service_capacity() -> None:
    op.create_table(
        "service_capacity",
        sa.Column("service_id", sa.String(length=64), nullable=False),
        sa.Column("school_id", sa.String(length=64), nullable=False),
        sa.Column("district_id", sa.String(length=64), nullable=False),
        sa.Column("need", sa.String(length=32), nullable=False),
        sa.Column("partner_id", sa.String(length=64), nullable=False),
        sa.Column("service_status", sa.String(length=24), nullable=False),
        sa.Column("partner_status", sa.String(length=16), nullable=False),
        sa.Column("languages_key", sa.String(length=200), nullable=False),
        sa.Column("grades_key", sa.String(length=64), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False),
        sa.CheckConstraint("reserved <= capacity", name="ck_capacity_reserved_within"),
        sa.CheckConstraint("reserved >= 0", name="ck_capacity_reserved_nonnegative"),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["partner_services.id"],
        ),
        sa.PrimaryKeyConstraint("service_id", "school_id"),
    )
    op.create_index(
        "ix_capacity_match",
        "service_capacity",
        [
            "district_id",
            "need",
            "school_id",
            "service_status",
            "partner_status",
            "reserved",
            "capacity",
            "partner_id",
            "languages_key",
            "grades_key",
            "service_id",
        ],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_capacity_match", table_name="service_capacity")
    op.drop_table("service_capacity")
    op.drop_index(op.f("ix_partner_services_partner_id"), table_name="partner_services")
    op.drop_index(op.f("ix_partner_services_need"), table_name="partner_services")
    op.drop_index(op.f("ix_partner_services_district_id"), table_name="partner_services")
    op.drop_table("partner_services")
    op.drop_index("ix_requests_report", table_name="referral_requests")
    op.drop_table("referral_requests")
    op.drop_index(op.f("ix_partners_district_id"), table_name="partners")
    op.drop_index("ix_partners_district_hsds", table_name="partners")
    op.drop_table("partners")
    op.drop_table("partner_stats")
    op.drop_table("family_languages")
    drop_messaging_tables_v1()
