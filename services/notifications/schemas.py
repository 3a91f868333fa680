"""Notifications' HTTP request and response models (the routes are in api.py)."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class MessageView(BaseModel):
    id: str
    family_id: str
    referral_id: str | None
    batch_id: str | None
    kind: str
    urgency: str
    status: str
    channel: str | None = Field(description="the channel that sent it, or that failed for good")
    language: str
    used_language: str | None
    fell_back: bool = Field(description="English was used: no template in the family's language")
    segments: int | None = Field(description="SMS parts billed (GSM-7 or UCS-2)")
    encoding: str | None
    attempts: int
    held_reason: str | None = Field(description="quiet_hours | daily_cap while waiting")
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None


class BatchProgress(BaseModel):
    batch_id: str
    total: int
    by_status: dict[str, int]
    by_channel: dict[str, int]
    done: bool


class EmailReply(BaseModel):
    to: str = Field(max_length=320)
    sender: str = Field(default="", max_length=320, alias="from")
    text: str = Field(max_length=20_000)
    message_id: str | None = Field(default=None, max_length=256)
