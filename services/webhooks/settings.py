"""The webhooks service's settings: the shared ones plus its database and delivery policy."""

from pydantic import Field

from runtime.settings import Settings


class WebhooksSettings(Settings):
    webhooks_database_url: str | None = Field(None, alias="WEBHOOKS_DATABASE_URL")
    # A delivery is tried this many times (with exponential back-off) before it is parked in
    # its endpoint's dead letters: by default about a day and a half of retries.
    webhooks_max_attempts: int = Field(12, ge=1, alias="ENSEMBLE_WEBHOOKS_MAX_ATTEMPTS")
    webhooks_retry_base_seconds: float = Field(
        30.0, gt=0, alias="ENSEMBLE_WEBHOOKS_RETRY_BASE_SECONDS")
    webhooks_retry_max_seconds: float = Field(
        6 * 3600.0, gt=0, alias="ENSEMBLE_WEBHOOKS_RETRY_MAX_SECONDS")
    webhooks_timeout_seconds: float = Field(10.0, gt=0, alias="ENSEMBLE_WEBHOOKS_TIMEOUT_SECONDS")
    webhooks_poll_seconds: float = Field(1.0, gt=0, alias="ENSEMBLE_WEBHOOKS_POLL_SECONDS")
    webhooks_concurrency: int = Field(16, ge=1, alias="ENSEMBLE_WEBHOOKS_CONCURRENCY")
    webhooks_batch: int = Field(100, ge=1, alias="ENSEMBLE_WEBHOOKS_BATCH")
    webhooks_require_https: bool = Field(False, alias="ENSEMBLE_WEBHOOKS_REQUIRE_HTTPS")
    # "true" lets endpoints be private, loopback or link-local addresses (a laptop, tests);
    # otherwise an integrator's URL could reach into the cluster (services.webhooks.destinations).
    webhooks_allow_private: bool = Field(False, alias="ENSEMBLE_WEBHOOKS_ALLOW_PRIVATE")


def webhooks_settings(settings: Settings, **overrides: object) -> WebhooksSettings:
    """The shared settings extended with this service's (from the environment or overrides)."""
    return WebhooksSettings.of(settings, **overrides)
