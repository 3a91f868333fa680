"""The insights service's settings: the shared ones plus the staff digest's schedule."""

from pydantic import Field

from runtime.settings import Settings


class InsightsSettings(Settings):
    # The weekly staff digest goes out on this weekday (0 Monday .. 6 Sunday) from this hour,
    # in each school's time zone; the loop looks every digest_poll_seconds.
    digest_weekday: int = Field(0, ge=0, le=6, alias="ENSEMBLE_DIGEST_WEEKDAY")
    digest_hour: int = Field(7, ge=0, le=23, alias="ENSEMBLE_DIGEST_HOUR")
    digest_poll_seconds: float = Field(300.0, gt=0, alias="ENSEMBLE_DIGEST_POLL_SECONDS")
    digest_enabled: bool = Field(True, alias="ENSEMBLE_DIGEST_ENABLED")


def insights_settings(settings: Settings, **overrides: object) -> InsightsSettings:
    """The shared settings extended with this service's (from the environment or overrides)."""
    if isinstance(settings, InsightsSettings) and not overrides:
        return settings
    return InsightsSettings(**(settings.model_dump() | overrides))
