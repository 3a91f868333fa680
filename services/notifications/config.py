"""Notifications' own knobs. Read from the environment here until they move into
runtime.settings.Settings (the lead owns that file)."""

from datetime import time

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotificationsConfig(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    quiet_start: time = Field(time(20, 0), alias="ENSEMBLE_QUIET_HOURS_START")
    quiet_end: time = Field(time(8, 0), alias="ENSEMBLE_QUIET_HOURS_END")
    # Messages per family in any 24 hours; crisis messages are not held by it.
    daily_cap: int = Field(4, ge=1, alias="ENSEMBLE_DAILY_MESSAGE_CAP")
    batch: int = Field(500, ge=1, le=5000, alias="ENSEMBLE_DISPATCH_BATCH")
    sms_window: int = Field(50, ge=1, le=1000, alias="ENSEMBLE_SMS_WINDOW")
    smtp_connections: int = Field(4, ge=1, le=64, alias="ENSEMBLE_SMTP_CONNECTIONS")
    max_attempts: int = Field(8, ge=1, alias="ENSEMBLE_SEND_MAX_ATTEMPTS")
    retry_base_seconds: float = Field(2.0, gt=0, alias="ENSEMBLE_SEND_RETRY_BASE_SECONDS")
    retry_max_seconds: float = Field(3600.0, gt=0, alias="ENSEMBLE_SEND_RETRY_MAX_SECONDS")
