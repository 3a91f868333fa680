"""Alembic's environment for the insights service: `ensemble migrate insights` runs it
(runtime/migrations.py); revisions are in versions/."""

import services.insights.service  # noqa: F401  (every module of the service that declares a table)
from runtime.migrations import run_env
from services.insights.tables import Base

run_env(Base.metadata)
