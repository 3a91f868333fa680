"""The channels' providers behind one interface: email over SMTP, SMS in Twilio's API shape."""

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Protocol
from urllib.parse import urlsplit

import aiosmtplib

from services.notifications.errors import PermanentSendError, TransientSendError
from services.notifications.twilio import TwilioSmsClient


@dataclass(frozen=True)
class Outgoing:
    to: str
    subject: str
    text: str
    html: str | None
    idempotency_key: str


class Provider(Protocol):
    async def send(self, message: Outgoing) -> str: ...


class SmtpEmail:
    """Email over real SMTP. ``smtp://host:port``; ``smtps://`` for implicit TLS; user:password
    in the URL when the relay needs them."""

    def __init__(self, url: str, sender: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.use_tls = parts.scheme == "smtps"
        self.username = parts.username
        self.password = parts.password
        self.sender = sender

    async def send(self, message: Outgoing) -> str:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.to
        email["Subject"] = message.subject
        # A stable Message-ID from the idempotency key lets a relay or a reader spot a resend.
        email["Message-ID"] = make_msgid(idstring=message.idempotency_key, domain="ensemble.local")
        email.set_content(message.text)
        if message.html:
            email.add_alternative(message.html, subtype="html")
        try:
            await aiosmtplib.send(
                email, hostname=self.host, port=self.port, use_tls=self.use_tls,
                username=self.username, password=self.password, timeout=15,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise PermanentSendError("recipient refused by the mail server") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentSendError(f"mail server said {exc.code}", status=exc.code) from exc
            raise TransientSendError(f"mail server said {exc.code}", status=exc.code) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientSendError(f"mail server unreachable: {type(exc).__name__}") from exc
        return str(email["Message-ID"])


class TwilioSms:
    def __init__(self, client: TwilioSmsClient) -> None:
        self.client = client

    async def send(self, message: Outgoing) -> str:
        return await self.client.send(message.to, message.text, message.idempotency_key)
