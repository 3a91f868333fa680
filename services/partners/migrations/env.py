"""Alembic's environment for the partners service: `ensemble migrate partners` runs it
(runtime/migrations.py); revisions are in versions/."""

import services.partners.service  # noqa: F401  (every module of the service that declares a table)
from runtime.migrations import run_env
from services.partners.tables import Base

run_env(Base.metadata)
