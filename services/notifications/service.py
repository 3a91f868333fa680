"""Assembles the notifications service with its providers and dispatcher."""

from contracts.taxonomy import Channel
from runtime.daily import retention_job
from runtime.db import Clock, utcnow
from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.notifications import handlers
from services.notifications.api import PUBLIC_ROUTES, router
from services.notifications.deps import NAME, NotificationsDeps, NotificationsRoutes
from services.notifications.dispatch import Dispatcher
from services.notifications.erasure import expire_messages
from services.notifications.providers import NoSmsProvider, Provider, SmtpEmail, TwilioSms
from services.notifications.settings import NotificationsSettings
from services.notifications.tables import JOB_RUNS, Base
from services.notifications.twilio import TwilioSmsClient

STATUS_CALLBACK_PATH = "/api/v1/sms/status"


def providers(settings: NotificationsSettings) -> dict[Channel, Provider]:
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
            window=settings.sms_window,
        )
    email = SmtpEmail(settings.smtp_url, settings.email_from,
                      connections=settings.smtp_connections)
    return {Channel.email: email, Channel.sms: sms}


def build(settings: Settings, districts: Districts | None = None, *,
          clock: Clock | None = None) -> Service:
    """``settings`` may be the shared ones (this service's own are then read from the
    environment) or a ``NotificationsSettings``; ``clock`` is for tests."""
    own = NotificationsSettings.of(settings)
    clock = clock or utcnow
    rt = ServiceRuntime(NAME, own, Base.metadata, districts)
    sending = providers(own)
    dispatcher = Dispatcher(rt, sending, own, clock=clock)
    rt.run_in_background(dispatcher.run)
    rt.consume(handlers.HANDLERS, NotificationsDeps(dispatcher.holds, dispatcher.wake, clock,
                                                    sending[Channel.email],
                                                    districts=rt.districts),
               prefetch=handlers.PREFETCH)
    service = Service(rt, router, deps=NotificationsRoutes(rt, own, dispatcher, clock))
    service.dispatcher = dispatcher  # type: ignore[attr-defined]  # for tests and benchmarks
    service.retention = retention_job(  # type: ignore[attr-defined]  # for tests
        rt, JOB_RUNS, lambda uow, now: expire_messages(uow, rt.districts, now), clock)
    # Webhooks and signed links skip the bearer token (when the host checks tokens).
    service.policy.public = frozenset(service.policy.public) | PUBLIC_ROUTES
    return service
