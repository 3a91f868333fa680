"""Assembles the notifications service with its providers and dispatcher."""

from contracts.taxonomy import Channel
from runtime.daily import retention_job
from runtime.db import Clock, utcnow
from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.notifications import handlers
from services.notifications.api import PUBLIC_ROUTES, build_router
from services.notifications.config import NotificationsConfig
from services.notifications.deps import NotificationsDeps
from services.notifications.dispatch import Dispatcher
from services.notifications.erasure import expire_messages
from services.notifications.providers import NoSmsProvider, Provider, SmtpEmail, TwilioSms
from services.notifications.tables import JOB_RUNS, Base
from services.notifications.twilio import TwilioSmsClient

NAME = "notifications"
STATUS_CALLBACK_PATH = "/api/v1/sms/status"


def providers(settings: Settings, config: NotificationsConfig) -> dict[Channel, Provider]:
    sms: Provider = NoSmsProvider()
    if settings.sms_api_url:
        sms = TwilioSms(
            TwilioSmsClient(
                settings.sms_api_url,
                settings.sms_account_sid,
                settings.sms_auth_token,
                settings.sms_from_number,
                status_callback_url=f"{settings.public_base_url}{STATUS_CALLBACK_PATH}",
            ),
            window=config.sms_window,
        )
    email = SmtpEmail(settings.smtp_url, settings.email_from, connections=config.smtp_connections)
    return {Channel.email: email, Channel.sms: sms}


def build(settings: Settings, districts: Districts | None = None, *,
          config: NotificationsConfig | None = None, clock: Clock | None = None) -> Service:
    config = config or NotificationsConfig()
    clock = clock or utcnow
    rt = ServiceRuntime(NAME, settings, Base.metadata, districts)
    sending = providers(settings, config)
    dispatcher = Dispatcher(rt, sending, config, clock=clock)
    rt.run_in_background(dispatcher.run)
    deps = NotificationsDeps(dispatcher.holds, dispatcher.wake, clock, sending[Channel.email],
                             districts=rt.districts)
    rt.consume(handlers.HANDLERS, deps)
    service = Service(rt, build_router(rt, dispatcher), deps=deps)
    service.dispatcher = dispatcher  # type: ignore[attr-defined]  # for tests and benchmarks
    service.retention = retention_job(  # type: ignore[attr-defined]  # for tests
        rt, JOB_RUNS, lambda uow, now: expire_messages(uow, rt.districts, now), clock)
    _make_public(service, PUBLIC_ROUTES)
    return service


def _make_public(service: Service, routes: frozenset[tuple[str, str]]) -> None:
    """Webhooks and signed links skip the bearer token (when the host checks tokens)."""
    policy = getattr(service, "policy", None)
    if policy is not None and hasattr(policy, "public"):
        policy.public = frozenset(policy.public) | routes
