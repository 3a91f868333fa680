"""What families send back: replies, STOP/START, unsubscribe clicks, and the provider's delivery
reports. Each becomes state here and an event: FamilyReplied (internal, carries the text),
FamilyOptedOut / FamilyOptedIn, NotificationDelivered, NotificationFailed."""

import hashlib
import hmac
import re
from datetime import datetime

from sqlalchemy import select

from contracts.events import FamilyOptedIn, FamilyReplied
from contracts.taxonomy import Channel
from runtime.erasure import erasure_barrier
from runtime.outbox import UnitOfWork
from services.notifications.delivery import apply_status, emit_about, lock_provider_ids
from services.notifications.dispatch import Dispatcher
from services.notifications.erasure import is_erased
from services.notifications.handlers import new_message
from services.notifications.opt_outs import families_at, record_opt_out, set_opt_out
from services.notifications.tables import EarlyStatus, InboundSeen, Message

STOP_WORDS = frozenset({"STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "STOPALL"})
START_WORDS = frozenset({"START", "UNSTOP"})
REPLY_ADDRESS = re.compile(r"reply\+([0-9a-f-]{36})\.([0-9a-f]{32})@", re.IGNORECASE)


def keyword(text: str) -> str:
    """The message as a keyword: carriers match the whole message, any case, stray spaces and
    punctuation ignored ("Stop." is STOP, "please stop texting" is a reply)."""
    return re.sub(r"[^A-Za-z]", "", text).upper() if len(text.split()) == 1 else ""


async def first_time(uow: UnitOfWork, key: str, now: datetime) -> bool:
    if await uow.session.get(InboundSeen, key) is not None:
        return False
    uow.session.add(InboundSeen(id=key, at=now))
    return True


def _replied(message: Message, channel: Channel, text: str, now: datetime,
             phone: str | None = None) -> FamilyReplied:
    return FamilyReplied(
        family_id=message.family_id, school_id=message.school_id, notification_id=message.id,
        outreach_id=None if message.batch_id else message.outreach_id,
        referral_id=message.referral_id, batch_id=message.batch_id, kind=message.kind,
        channel=channel, text=text[:1600], received_at=now, phone=phone)


async def inbound_sms(uow: UnitOfWork, dispatcher: Dispatcher, sid: str, phone: str, text: str,
                      now: datetime) -> str:
    """Handle one inbound SMS; returns what it was (for metrics, never the content)."""
    if not await first_time(uow, f"sms:{sid}", now):
        return "duplicate"
    messages = await families_at(uow, Channel.sms, phone)
    word = keyword(text)
    if word in STOP_WORDS:
        district = messages[0].district_id if messages else ""
        if await record_opt_out(uow, district, Channel.sms, phone, messages, now) and messages:
            _confirm(uow, dispatcher, messages[0], "opt_out_confirmation", sid, now)
        return "opt_out"
    if word in START_WORDS:
        district = messages[0].district_id if messages else ""
        if await set_opt_out(uow, district, Channel.sms, phone, False, now):
            for message in {m.family_id: m for m in messages}.values():
                emit_about(uow, message, FamilyOptedIn(family_id=message.family_id,
                                                     channel=Channel.sms, at=now))
            if messages:
                _confirm(uow, dispatcher, messages[0], "opt_in_confirmation", sid, now)
        return "opt_in"
    if not messages:
        return "unknown_sender"
    # A text names no message: engagement, which knows which outreach at this phone still
    # await an answer (one family's or several sharing the phone), decides which one it
    # answers; the message we wrote last is only where it goes when none is open.
    latest = messages[0]
    emit_about(uow, latest, _replied(latest, Channel.sms, text, now, phone=phone[:32]))
    return "reply"


def _confirm(uow: UnitOfWork, dispatcher: Dispatcher, about: Message, kind: str, sid: str,
             now: datetime) -> None:
    """One confirmation per change of state (a second STOP changes nothing, sends nothing)."""
    school = dispatcher.rt.districts.school(about.district_id, about.school_id)
    row = new_message(
        dispatcher, now, idempotency_key=f"{kind}:{sid}", district_id=about.district_id,
        school_id=about.school_id, family_id=about.family_id, outreach_id=f"inbound:{sid}",
        correlation_id=about.correlation_id, kind=kind, urgency="routine", language=about.language,
        channels=[Channel.sms.value], phone=about.phone, family_name="",
        variables={"school_name": school.name if school else about.school_id})
    uow.session.add(Message(**row))
    uow.after_commit.append(dispatcher.wake)


async def inbound_email(uow: UnitOfWork, to: str, sender: str, text: str, now: datetime,
                        message_id: str | None) -> str:
    """A reply to one of our emails, matched by the signed reply address it was sent to."""
    match = REPLY_ADDRESS.search(to)
    if not match:
        return "unknown_address"
    await erasure_barrier(uow)  # an erasure in progress commits first, or waits for this
    message = await uow.session.get(Message, match[1])
    if message is None or not _same(message.token, match[2].lower()):
        return "bad_token"
    if await is_erased(uow, message.district_id, message.family_id):
        return "erased"  # the family was forgotten: its answer is not kept either
    key = message_id or hashlib.sha256(f"{to}\0{sender}\0{text}".encode()).hexdigest()
    if not await first_time(uow, f"email:{key}"[:128], now):
        return "duplicate"
    body = _strip_quoted(text)
    if keyword(body) in STOP_WORDS and message.email:
        await record_opt_out(uow, message.district_id, Channel.email, message.email,
                             [message], now)
        return "opt_out"
    emit_about(uow, message, _replied(message, Channel.email, body, now))
    return "reply"


def _strip_quoted(text: str) -> str:
    """The new part of a reply: lines before the quoted original."""
    kept = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith(">") or re.match(r"^On .+ wrote:$", line.strip()):
            break
        kept.append(line)
    return "\n".join(kept).strip() or text.strip()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


async def unsubscribe_email(uow: UnitOfWork, message_id: str, token: str, now: datetime) -> bool:
    message = await uow.session.get(Message, message_id)
    if message is None or not message.email or not _same(message.token, token):
        return False
    await record_opt_out(uow, message.district_id, Channel.email, message.email, [message], now)
    return True


async def status_callback(uow: UnitOfWork, dispatcher: Dispatcher, sid: str, status: str,
                          error_code: str | None, now: datetime) -> str:
    if status not in ("delivered", "failed", "undelivered"):
        return "ignored"
    if not await first_time(uow, f"status:{sid}:{status}", now):
        return "duplicate"
    await lock_provider_ids(uow.session, [sid])  # the send may be being recorded right now
    message = await uow.session.scalar(
        select(Message).where(Message.provider_id == sid).with_for_update())
    if message is None:  # sent, not yet recorded (or not ours): kept for the dispatcher
        await uow.session.merge(EarlyStatus(sid=sid[:64], status=status,
                                            error_code=(error_code or "")[:16] or None,
                                            received_at=now))
        return "early"
    return await apply_status(uow, dispatcher.wake, message, status, error_code, now)
