"""Referrals' own settings: the shared ones plus its follow-up timers and the wait for a family
registered a moment ago."""

from pydantic import Field

from runtime.settings import Settings


class ReferralsSettings(Settings):
    follow_up_scan_seconds: float = Field(30, gt=0, alias="ENSEMBLE_FOLLOW_UP_SCAN_SECONDS")
    referral_metrics_seconds: float = Field(5, gt=0, alias="ENSEMBLE_REFERRAL_METRICS_SECONDS")
    # POST /referrals waits this long for a family registered a moment ago (FamilyRegistered
    # still on its way) before answering 409.
    family_wait_seconds: float = Field(5, ge=0, le=60, alias="ENSEMBLE_FAMILY_WAIT_SECONDS")
