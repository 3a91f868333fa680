"""Assembles the notifications service with its providers and dispatcher."""

from contracts.taxonomy import Channel
from runtime.districts import Districts
from runtime.host import Service
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.notifications import handlers
from services.notifications.api import build_router
from services.notifications.dispatch import Dispatcher
from services.notifications.errors import PermanentSendError
from services.notifications.providers import Outgoing, Provider, SmtpEmail, TwilioSms
from services.notifications.tables import Base
from services.notifications.twilio import TwilioSmsClient

NAME = "notifications"


class NoSmsProvider:
    async def send(self, message: Outgoing) -> str:
        raise PermanentSendError("no SMS provider configured (SMS_API_URL)")


def providers(settings: Settings) -> dict[Channel, Provider]:
    sms: Provider = NoSmsProvider()
    if settings.sms_api_url:
        sms = TwilioSms(
            TwilioSmsClient(
                settings.sms_api_url,
                settings.sms_account_sid,
                settings.sms_auth_token,
                settings.sms_from_number,
            )
        )
    return {Channel.email: SmtpEmail(settings.smtp_url, settings.email_from), Channel.sms: sms}


def build(settings: Settings, districts: Districts | None = None) -> Service:
    rt = ServiceRuntime(NAME, settings, Base.metadata, districts)
    dispatcher = Dispatcher(rt, providers(settings))
    rt.run_in_background(dispatcher.run)
    handlers.register(rt, dispatcher)
    service = Service(rt, build_router(rt))
    return service
