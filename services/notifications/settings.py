"""Notifications' own settings: the shared ones (which also hold the SMTP relay and the SMS
provider, SMTP_URL and SMS_*) plus when and how fast messages go."""

from datetime import time

from pydantic import Field

from runtime.settings import Settings


class NotificationsSettings(Settings):
    # Routine messages wait out quiet hours in the school's time zone (equal ends: none).
    quiet_hours_start: time = Field(time(20, 0), alias="ENSEMBLE_QUIET_HOURS_START")
    quiet_hours_end: time = Field(time(8, 0), alias="ENSEMBLE_QUIET_HOURS_END")
    # Messages per family in any 24 hours; crisis messages are not held by it.
    daily_message_cap: int = Field(4, ge=1, alias="ENSEMBLE_DAILY_MESSAGE_CAP")
    dispatch_batch: int = Field(500, ge=1, le=5000, alias="ENSEMBLE_DISPATCH_BATCH")
    sms_window: int = Field(50, ge=1, le=1000, alias="ENSEMBLE_SMS_WINDOW")
    smtp_connections: int = Field(4, ge=1, le=64, alias="ENSEMBLE_SMTP_CONNECTIONS")
    # A send is tried this many times (exponential back-off) before the next channel.
    send_max_attempts: int = Field(8, ge=1, alias="ENSEMBLE_SEND_MAX_ATTEMPTS")
    send_retry_base_seconds: float = Field(2.0, gt=0, alias="ENSEMBLE_SEND_RETRY_BASE_SECONDS")
    send_retry_max_seconds: float = Field(3600.0, gt=0, alias="ENSEMBLE_SEND_RETRY_MAX_SECONDS")
