"""Engagement's own settings: the shared ones plus its outreach policy and fan-out chunks."""

from pydantic import Field

from runtime.settings import Settings


class EngagementSettings(Settings):
    # Messages (and logged calls without an answer) before a family counts as unreachable.
    outreach_max_attempts: int = Field(3, ge=1, alias="ENSEMBLE_OUTREACH_MAX_ATTEMPTS")
    # How long to wait for an answer before the next attempt, on the other channel first.
    outreach_reply_wait_seconds: float = Field(48 * 3600, gt=0,
                                               alias="ENSEMBLE_OUTREACH_REPLY_WAIT_SECONDS")
    # Families per bulk request on NATS (well under the 1 MB message limit).
    bulk_chunk: int = Field(500, ge=1, le=2000, alias="ENSEMBLE_BULK_CHUNK")
    # The outreach timers' and the announcement fan-out's round.
    engagement_timer_seconds: float = Field(2.0, gt=0, alias="ENSEMBLE_ENGAGEMENT_TIMER_SECONDS")
