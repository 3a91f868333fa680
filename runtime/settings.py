"""Settings from the environment, shared by every service. One database URL per service; SQLite
files by default. A service with its own variables extends them in services/<name>/settings.py
(``<Name>Settings(Settings)``, built from these with ``<Name>Settings.of(settings)``)."""

from pathlib import Path
from typing import Any, Self

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DISTRICTS_FILE = REPO_ROOT / "deploy" / "districts.toml"
DEV_JWT_SECRET = "development-only-secret-change-me-0123456789"
DEV_PARTNER_LINK_SECRET = "development-only-partner-link-secret-0123456789"
SERVICES = ("referrals", "partners", "engagement", "notifications", "webhooks", "insights")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    nats_url: str = Field("nats://127.0.0.1:4222", alias="NATS_URL")
    nats_user: str | None = Field(None, alias="NATS_USER")
    nats_password: str | None = Field(None, alias="NATS_PASSWORD")
    data_dir: Path = Field(Path("data"), alias="ENSEMBLE_DATA_DIR")
    districts_file: Path = Field(DEFAULT_DISTRICTS_FILE, alias="ENSEMBLE_DISTRICTS_FILE")
    stream_replicas: int = Field(1, ge=1, le=5, alias="ENSEMBLE_STREAM_REPLICAS")
    log_level: str = Field("INFO", alias="ENSEMBLE_LOG_LEVEL")
    # Development only: signs and checks HS256 bearer tokens when no JWKS is configured.
    jwt_secret: str = Field(DEV_JWT_SECRET, min_length=32, alias="ENSEMBLE_JWT_SECRET")
    # A deployment: services check bearer tokens against the console's published keys, a URL
    # (the console's /.well-known/jwks.json) or a JWKS file. Set, HS256 tokens are refused.
    jwks_url: str | None = Field(None, alias="ENSEMBLE_JWKS_URL")
    # How long services keep the JWKS before reading it again (a retired key's tokens are
    # refused at most this long after it leaves the file). A key they have not seen yet is
    # fetched at once whatever this says.
    jwks_cache_seconds: float = Field(300, gt=0, le=86400, alias="ENSEMBLE_JWKS_CACHE_SECONDS")
    # The console's private keys (a JWKS file; `ensemble keys new`): the first signs the API
    # tokens it hands out, all are published. Also what `ensemble token` signs with, if set.
    signing_keys_file: Path | None = Field(None, alias="ENSEMBLE_SIGNING_KEYS_FILE")

    referrals_database_url: str | None = Field(None, alias="REFERRALS_DATABASE_URL")
    partners_database_url: str | None = Field(None, alias="PARTNERS_DATABASE_URL")
    engagement_database_url: str | None = Field(None, alias="ENGAGEMENT_DATABASE_URL")
    notifications_database_url: str | None = Field(None, alias="NOTIFICATIONS_DATABASE_URL")
    webhooks_database_url: str | None = Field(None, alias="WEBHOOKS_DATABASE_URL")
    insights_database_url: str | None = Field(None, alias="INSIGHTS_DATABASE_URL")
    # A schema per service lets several services share one PostgreSQL database (tests, small
    # installs) without reading each other's tables.
    database_schema_prefix: str | None = Field(None, alias="ENSEMBLE_DATABASE_SCHEMA_PREFIX")

    # Delivery: after max_deliver failed attempts a message is dead-lettered.
    max_deliver: int = Field(5, ge=1, alias="ENSEMBLE_MAX_DELIVER")
    retry_base_seconds: float = Field(1.0, gt=0, alias="ENSEMBLE_RETRY_BASE_SECONDS")
    retry_max_seconds: float = Field(60.0, gt=0, alias="ENSEMBLE_RETRY_MAX_SECONDS")
    fetch_batch: int = Field(100, ge=1, le=1000, alias="ENSEMBLE_FETCH_BATCH")
    fetch_wait_seconds: float = Field(0.005, gt=0, alias="ENSEMBLE_FETCH_WAIT_SECONDS")
    outbox_poll_seconds: float = Field(0.5, gt=0, alias="ENSEMBLE_OUTBOX_POLL_SECONDS")
    # How often each copy checks whether its service's daily retention job is due (it runs once
    # a day across copies, runtime/daily.py).
    retention_check_seconds: float = Field(600, gt=0, alias="ENSEMBLE_RETENTION_CHECK_SECONDS")

    # Outreach
    smtp_url: str = Field("smtp://127.0.0.1:8025", alias="SMTP_URL")
    email_from: str = Field("Ensemble <noreply@ensemble.local>", alias="EMAIL_FROM")
    sms_api_url: str | None = Field(None, alias="SMS_API_URL")
    sms_account_sid: str = Field("ACdev", alias="SMS_ACCOUNT_SID")
    sms_auth_token: str = Field("dev-token", alias="SMS_AUTH_TOKEN")
    sms_from_number: str = Field("+15005550006", alias="SMS_FROM_NUMBER")
    public_base_url: str = Field("http://127.0.0.1:8000", alias="ENSEMBLE_PUBLIC_BASE_URL")
    # Partner links (services/partners/links.py): signed with the partners service's own
    # secret (no other service checks them), valid this many hours. Set the secret in production.
    partner_link_secret: str = Field(DEV_PARTNER_LINK_SECRET, min_length=32,
                                     alias="ENSEMBLE_PARTNER_LINK_SECRET")
    partner_link_hours: float = Field(72, gt=0, le=24 * 30, alias="ENSEMBLE_PARTNER_LINK_HOURS")

    @classmethod
    def of(cls, settings: "Settings", **overrides: Any) -> Self:
        """``settings`` as ``cls`` (a service's own ``<Name>Settings``): the shared values kept,
        the service's own read from the environment unless ``overrides`` gives them."""
        if isinstance(settings, cls) and not overrides:
            return settings
        return cls(**(settings.model_dump() | overrides))

    def database_url(self, service: str) -> str:
        url = getattr(self, f"{service}_database_url")
        if url:
            return url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / f'{service}.db'}"

    def database_schema(self, service: str) -> str | None:
        return f"{self.database_schema_prefix}_{service}" if self.database_schema_prefix else None
