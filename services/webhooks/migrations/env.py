"""Alembic's environment for the webhooks service: `ensemble migrate webhooks` runs it
(runtime/migrations.py); revisions are in versions/."""

import services.webhooks.service  # noqa: F401  (every module of the service that declares a table)
from runtime.migrations import run_env
from services.webhooks.tables import Base

run_env(Base.metadata)
