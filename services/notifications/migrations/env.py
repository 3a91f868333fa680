"""Alembic's environment for the notifications service: `ensemble migrate notifications` runs it
(runtime/migrations.py); revisions are in versions/."""

import services.notifications.service  # noqa: F401  (every module of the service that declares a table)
from runtime.migrations import run_env
from services.notifications.tables import Base

run_env(Base.metadata)
