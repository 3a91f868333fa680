"""Alembic's environment for the referrals service: `ensemble migrate referrals` runs it
(runtime/migrations.py); revisions are in versions/."""

import services.referrals.service  # noqa: F401  (every module of the service that declares a table)
from runtime.migrations import run_env
from services.referrals.tables import Base

run_env(Base.metadata)
