"""Alembic's environment for the engagement service: `ensemble migrate engagement` runs it
(runtime/migrations.py); revisions are in versions/."""

import services.engagement.service  # noqa: F401  (every module of the service that declares a table)
from runtime.migrations import run_env
from services.engagement.tables import Base

run_env(Base.metadata)
