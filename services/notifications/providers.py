"""The channels' providers behind one interface: email over SMTP, SMS in Twilio's API shape.

``send_many`` takes a batch and answers, per message, a provider id or the SendError it met;
fan-out speed comes from here: email reuses a few open SMTP connections for the whole batch,
SMS goes out concurrently within a bounded window.
"""

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import Compat32
from email.utils import formatdate, parseaddr
from typing import Any, Protocol
from urllib.parse import urlsplit
from uuid import uuid4

import aiosmtplib
from aiosmtplib import SMTPStatus
from aiosmtplib.email import quote_address
from email_validator import EmailNotValidError, validate_email
from opentelemetry.trace import SpanKind

from runtime import tracing
from services.notifications.errors import PermanentSendError, SendError, TransientSendError
from services.notifications.mime import email_bytes, subject_value
from services.notifications.twilio import TwilioSmsClient

log = logging.getLogger("ensemble.notifications.providers")

Result = str | SendError


class _Compat32Plain(Compat32):
    """compat32 that writes a short ASCII header line as it is. The generic folder builds and
    encodes a Header object for every line (a third of composing a message) to change nothing
    in a line under the limit. With ``utf8`` (a message sent with SMTPUTF8, RFC 6532) a short
    non-ASCII line is written as UTF-8: an address must not become an RFC 2047 encoded-word."""

    utf8: bool = False

    def fold_binary(self, name: str, value: str) -> bytes:
        limit = (self.max_line_length or 0) + len(self.linesep)
        if (isinstance(value, str) and (value.isascii() or self.utf8) and "\n" not in value
                and "\r" not in value):
            line = f"{name}: {value}{self.linesep}".encode("utf-8", "surrogateescape")
            if len(line) <= limit:
                return line
        return super().fold_binary(name, value)


IDLE_SECONDS = 30.0
# Long URLs in List-Unsubscribe must not be folded (RFC 2369 clients); CRLF for SMTP.
EMAIL_POLICY = _Compat32Plain(max_line_length=998, linesep="\r\n")
EMAIL_POLICY_UTF8 = EMAIL_POLICY.clone(utf8=True)
NEEDS_SMTPUTF8 = "the mail server cannot take an address with non-ASCII letters (no SMTPUTF8)"


@dataclass(frozen=True)
class Outgoing:
    to: str
    subject: str
    text: str
    html: str | None
    idempotency_key: str
    headers: dict[str, str] = field(default_factory=dict)
    trace: dict[str, str] = field(default_factory=dict)  # the message's stored trace context


def sending(channel: str, message: Outgoing) -> AbstractContextManager[Any]:
    """The provider's send of one message, a span in the message's trace (ids only)."""
    return tracing.continued(f"{channel} send", message.trace, kind=SpanKind.CLIENT,
                             attributes={"ensemble.channel": channel,
                                         "ensemble.notification_id": message.idempotency_key})


class Provider(Protocol):
    async def send(self, message: Outgoing) -> str: ...

    async def send_many(self, messages: Sequence[Outgoing]) -> list[Result]: ...

    async def aclose(self) -> None: ...


async def send_concurrently(provider: Provider, messages: Sequence[Outgoing],
                            window: int) -> list[Result]:
    slots = asyncio.Semaphore(window)

    async def one(message: Outgoing) -> Result:
        async with slots:
            try:
                return await provider.send(message)
            except SendError as exc:
                return exc

    return list(await asyncio.gather(*(one(m) for m in messages)))


def smtp_address(address: str) -> tuple[str, bool]:
    """The address as the SMTP envelope and the To: header carry it, and whether that needs the
    server's SMTPUTF8 (RFC 6531): an internationalized domain travels in its ASCII (IDNA) form,
    so only a non-ASCII local part (josé@…) does. Raises EmailNotValidError."""
    if address.isascii():
        return address, False
    checked = validate_email(address, check_deliverability=False)
    return (checked.ascii_email, False) if checked.ascii_email else (checked.normalized, True)


def _refused(exc: aiosmtplib.SMTPRecipientsRefused | aiosmtplib.SMTPDataError) -> SendError:
    """The server refused this message's recipient or content: a 5xx is final for this message
    only, a 4xx (mailbox busy, greylisting) is worth trying again."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        code, what = exc.recipients[0].code, "recipient refused by the mail server"
    else:
        code, what = exc.code, "message refused by the mail server"
    # 503 is commands out of sequence: the connection's state, never the family's address.
    if 500 <= code < 600 and code != 503:
        return PermanentSendError(f"{what} ({code})", status=code)
    return TransientSendError(f"{what} ({code})", status=code)


def _unavailable(exc: BaseException) -> TransientSendError:
    """The server is away, refuses our connection, login or sender, or lost track of the
    conversation: nothing to do with the family's address, so it is retried later."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return TransientSendError(f"mail server said {exc.code}", status=exc.code)
    return TransientSendError(f"mail server unreachable: {type(exc).__name__}")


class SmtpEmail:
    """Email over real SMTP. ``smtp://host:port``; ``smtps://`` for implicit TLS; user:password
    in the URL when the relay needs them."""

    def __init__(self, url: str, sender: str, connections: int = 4) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.use_tls = parts.scheme == "smtps"
        self.username = parts.username
        self.password = parts.password
        self.sender = sender
        self.envelope_from = parseaddr(sender)[1] or sender
        self.connections = connections
        # Connections kept open between batches, with when each went idle: a batch of one
        # message (the loop's usual case) no longer pays for connect, EHLO and QUIT.
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []

    def headers(self, message: Outgoing) -> list[tuple[str, str]]:
        """The message's headers, in order, for ``compose`` and ``payload`` alike."""
        # A stable Message-ID from the idempotency key lets a relay or a reader spot a resend.
        return [("From", self.sender), ("To", message.to),
                ("Subject", subject_value(message.subject)),
                ("Message-ID", f"<{message.idempotency_key}@ensemble.local>"),
                ("Date", formatdate(localtime=False)), *message.headers.items()]

    def compose(self, message: Outgoing) -> Message:
        # compat32 MIME classes: a fan-out composes thousands a second, and the modern
        # EmailMessage header registry costs several times more per message.
        text = MIMEText(message.text, "plain", "utf-8")
        if message.html:
            # A random boundary given up front: otherwise the generator compiles a regex and
            # searches the whole body for a boundary it picked, per message.
            email: Message = MIMEMultipart("alternative", boundary=f"=_{uuid4().hex}")
            email.attach(text)
            email.attach(MIMEText(message.html, "html", "utf-8"))
        else:
            email = text
        for name, value in self.headers(message):
            email[name] = value
        return email

    def payload(self, message: Outgoing, utf8: bool = False) -> tuple[bytes, str]:
        """The bytes to send and the Message-ID: written directly (``mime.email_bytes``, the
        same bytes) unless a header needs folding or encoding, then composed and flattened."""
        headers = self.headers(message)
        message_id = dict(headers)["Message-ID"]
        fast = email_bytes(headers, message.text, message.html, f"=_{uuid4().hex}", utf8)
        if fast is not None:
            return fast, message_id
        # Our own bytes: aiosmtplib's flattening would fold long headers again.
        email = self.compose(message)
        return email.as_bytes(policy=EMAIL_POLICY_UTF8 if utf8 else EMAIL_POLICY), message_id

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(hostname=self.host, port=self.port, use_tls=self.use_tls,
                               username=self.username, password=self.password, timeout=15)

    async def send(self, message: Outgoing) -> str:
        [result] = await self.send_many([message])
        if isinstance(result, SendError):
            raise result
        return result

    async def send_many(self, messages: Sequence[Outgoing]) -> list[Result]:
        results: list[Result] = [TransientSendError("not attempted")] * len(messages)
        lanes = max(1, min(self.connections, len(messages)))
        await asyncio.gather(*(self._lane(messages, results, lane, lanes)
                               for lane in range(lanes)))
        return results

    async def aclose(self) -> None:
        while self._idle:
            await _quit(self._idle.pop()[0])

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        """An open connection idle for less than IDLE_SECONDS (a relay drops idle ones after
        a minute or more; one dropped anyway is opened again by the retry in _lane)."""
        now = asyncio.get_running_loop().time()
        while self._idle:
            client, since = self._idle.pop()
            if now - since < IDLE_SECONDS and client.is_connected:
                return client
            client.close()
        return None

    async def _lane(self, messages: Sequence[Outgoing], results: list[Result], lane: int,
                    lanes: int) -> None:
        """One open connection sends every ``lanes``-th message of the batch. Whatever fails,
        the connection is reused only when no transaction is left open on it (RSET, else
        closed): one family's refused address must never fail the next family's message."""
        client = self._take_idle()
        clean = True
        try:
            for index in range(lane, len(messages), lanes):
                message = messages[index]
                try:
                    to, utf8 = smtp_address(message.to)
                except EmailNotValidError:
                    results[index] = PermanentSendError("not a valid email address")
                    continue
                payload, message_id = self.payload(
                    message if to == message.to else replace(message, to=to), utf8)
                options = ["SMTPUTF8"] if utf8 or not self.envelope_from.isascii() else []
                for tries in (1, 2):  # a connection the server dropped is opened again once
                    if client is None or not client.is_connected:
                        client = self._client()
                        try:
                            await client.connect()
                        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                            # This and the rest of the lane are retried later.
                            results[index] = _unavailable(exc)
                            client.close()
                            client = None
                            return
                    clean = False
                    try:
                        with sending("email", message):
                            await _transaction(client, self.envelope_from, to, payload,
                                               options)
                        results[index] = message_id
                        clean = True
                        break
                    except aiosmtplib.SMTPServerDisconnected as exc:
                        client = None
                        results[index] = _unavailable(exc)
                        if tries == 2:
                            return
                    except aiosmtplib.SMTPNotSupported:
                        # Raised before MAIL FROM: the connection is still clean.
                        results[index] = PermanentSendError(NEEDS_SMTPUTF8)
                        clean = True
                        break
                    except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPDataError) as exc:
                        results[index] = _refused(exc)  # this message only
                        await _reset(client)
                        clean = True  # reset, or closed and so never reused
                        break
                    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                        # Refused sender, 421, a timeout: the lane is retried later.
                        results[index] = _unavailable(exc)
                        return
                    except Exception as exc:  # not the server's answer: this message only
                        log.warning("email send failed: %s", type(exc).__name__)
                        # ValueError: an address no SMTP command line can carry.
                        results[index] = (
                            PermanentSendError("address cannot be sent over SMTP")
                            if isinstance(exc, ValueError)
                            else TransientSendError(f"email provider error: {type(exc).__name__}"))
                        client.close()  # its state is unknown
                        client = None
                        clean = True
                        break
        finally:
            if client is not None and client.is_connected and clean:
                if len(self._idle) < self.connections:
                    self._idle.append((client, asyncio.get_running_loop().time()))
                else:
                    await _quit(client)
            elif client is not None:
                client.close()  # in an unknown state (mid-transaction): never reused


# An address aiosmtplib's quote_address gives back as it is, between < and >.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _mailbox(address: str, encoding: str) -> bytes:
    """The address as a MAIL or RCPT command carries it; ValueError (from aiosmtplib's own
    check) for one no command line can carry."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>".encode(encoding)
    return quote_address(address).encode(encoding)


async def _transaction(client: aiosmtplib.SMTP, sender: str, to: str, payload: bytes,
                       options: list[str]) -> None:
    """aiosmtplib's ``sendmail`` for one recipient, its commands, errors and RSET after a
    refusal, with each address quoted once: sendmail parses every address twice per message
    through ``email.utils.parseaddr``, a quarter of a fan-out email's CPU."""
    encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
    mail_from, rcpt_to = _mailbox(sender, encoding), _mailbox(to, encoding)
    if client.is_ehlo_or_helo_needed:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not client.is_connected:
                raise
            await client.helo()
    if encoding == "utf-8" and not client.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
    size = [f"size={len(payload)}"] if client.supports_extension("size") else []
    try:
        response = await client.execute_command(
            b"MAIL", b"FROM:" + mail_from, *(o.encode("ascii") for o in size + options))
        if response.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)
        response = await client.execute_command(b"RCPT", b"TO:" + rcpt_to)
        if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            raise aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(response.code, response.message, to)])
        await client.data(payload)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        # As sendmail: leave the connection with no transaction open.
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            await client.rset()
        raise


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()


async def _reset(client: aiosmtplib.SMTP) -> None:
    """End a refused transaction with RSET, or close the connection when that fails too
    (aiosmtplib sends its own RSET but ignores a refusal of it)."""
    if client.is_connected:  # a 421 closed it already: the next message opens another
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()


class TwilioSms:
    def __init__(self, client: TwilioSmsClient, window: int = 50) -> None:
        self.client = client
        self.window = window

    async def send(self, message: Outgoing) -> str:
        with sending("sms", message):
            return await self.client.send(message.to, message.text, message.idempotency_key)

    async def send_many(self, messages: Sequence[Outgoing]) -> list[Result]:
        return await send_concurrently(self, messages, self.window)

    async def aclose(self) -> None:
        await self.client.aclose()


class NoSmsProvider:
    async def send(self, message: Outgoing) -> str:
        raise PermanentSendError("no SMS provider configured (SMS_API_URL)")

    async def send_many(self, messages: Sequence[Outgoing]) -> list[Result]:
        return await send_concurrently(self, messages, 1)

    async def aclose(self) -> None:
        pass
