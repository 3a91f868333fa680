"""The console's settings: the deployment's own, plus its session and where the APIs are."""

from pathlib import Path

from pydantic import Field

from runtime.settings import Settings

DEV_SESSION_SECRET = "development-only-console-session-secret-0123456789"


class ConsoleSettings(Settings):
    # Where the APIs answer; unset, the deployment's own public base URL (`ensemble up`: the
    # same port; a deployment: its ingress or the services' internal address).
    console_api_url: str | None = Field(None, alias="ENSEMBLE_CONSOLE_API_URL")
    # Where one service answers, when the services are not behind one address (compose and
    # Kubernetes without an ingress): JSON such as {"referrals": "http://referrals:8000"}.
    console_service_urls: dict[str, str] = Field(default_factory=dict,
                                                 alias="ENSEMBLE_CONSOLE_SERVICE_URLS")
    # Signs the session cookie (which carries the person's API token). Set it in production.
    console_session_secret: str = Field(DEV_SESSION_SECRET, min_length=32,
                                        alias="ENSEMBLE_CONSOLE_SESSION_SECRET")
    console_session_hours: float = Field(8, gt=0, le=24, alias="ENSEMBLE_CONSOLE_SESSION_HOURS")
    # How long an API token the console makes for a signed-in person lasts; it makes a new one
    # before it ends, for as long as the session lasts.
    access_token_minutes: float = Field(10, ge=1, le=60, alias="ENSEMBLE_ACCESS_TOKEN_MINUTES")
    # Development mode: anyone may sign in as any role, district, school or partner. Only
    # `ensemble up` and `ensemble demo` on the embedded default turn it on.
    dev_sign_in: bool = Field(False, alias="ENSEMBLE_DEV_SIGN_IN")
    # Cookies are marked Secure when the request came over TLS (directly or as the proxy's
    # X-Forwarded-Proto says) or when this is set.
    console_secure_cookies: bool = Field(False, alias="ENSEMBLE_CONSOLE_SECURE_COOKIES")
    # How long the pages wait for an API answer.
    console_api_timeout_seconds: float = Field(15, gt=0, le=120,
                                               alias="ENSEMBLE_CONSOLE_API_TIMEOUT_SECONDS")

    # The sign-in audit trail, a JSON-lines file per district (services/console/audit.py).
    console_audit_dir: Path | None = Field(None, alias="ENSEMBLE_CONSOLE_AUDIT_DIR")

    @property
    def sign_in_audit_dir(self) -> Path:
        return self.console_audit_dir or self.data_dir / "audit" / "sign-in"

    @property
    def api_base_url(self) -> str:
        return (self.console_api_url or self.public_base_url).rstrip("/")

    def base_url_of(self, service: str) -> str:
        return self.console_service_urls.get(service, self.api_base_url).rstrip("/")
