"""Messages over HTTP (what was sent to a family, when, on which channel, in which language),
bulk progress, and the webhooks families and providers call back on.

Webhooks and links authenticate themselves, not with a bearer token: Twilio's requests by
their X-Twilio-Signature, email replies and unsubscribe links by the message's random token.
"""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import escape
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from runtime.db import utcnow
from runtime.errors import DomainError, NotFound
from runtime.service import ServiceRuntime
from services.notifications import inbound
from services.notifications.dispatch import Dispatcher
from services.notifications.metrics import INBOUND
from services.notifications.tables import Message
from services.notifications.twilio import SIGNATURE_HEADER, validate_signature

Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

# Routes that are not behind a bearer token (see runtime.auth.Policy.public).
PUBLIC_ROUTES = frozenset({
    ("POST", "/sms/inbound"),
    ("POST", "/sms/status"),
    ("POST", "/email/inbound"),
    ("GET", "/messages/{message_id}/unsubscribe"),
    ("POST", "/messages/{message_id}/unsubscribe"),
})


class Forbidden(DomainError):
    status_code = 403


class MessageView(BaseModel):
    id: str
    family_id: str
    referral_id: str | None
    batch_id: str | None
    kind: str
    urgency: str
    status: str
    channel: str | None = Field(description="the channel that sent it, or that failed for good")
    language: str
    used_language: str | None
    fell_back: bool = Field(description="English was used: no template in the family's language")
    segments: int | None = Field(description="SMS parts billed (GSM-7 or UCS-2)")
    encoding: str | None
    attempts: int
    held_reason: str | None = Field(description="quiet_hours | daily_cap while waiting")
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None


class BatchProgress(BaseModel):
    batch_id: str
    total: int
    by_status: dict[str, int]
    by_channel: dict[str, int]
    done: bool


class EmailReply(BaseModel):
    to: str = Field(max_length=320)
    sender: str = Field(default="", max_length=320, alias="from")
    text: str = Field(max_length=20_000)
    message_id: str | None = Field(default=None, max_length=256)


def _view(m: Message) -> MessageView:
    view = MessageView.model_validate(m, from_attributes=True)
    if m.status not in ("queued", "sending"):
        view.next_attempt_at = None
    return view


def build_router(rt: ServiceRuntime, dispatcher: Dispatcher) -> APIRouter:
    router = APIRouter()
    settings = rt.settings

    @router.get("/messages", response_model=list[MessageView])
    async def list_(district_id: Token, family_id: str | None = None,
                    referral_id: str | None = None, batch_id: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[MessageView]:
        query = select(Message).where(Message.district_id == district_id)
        if family_id:
            query = query.where(Message.family_id == family_id)
        if referral_id:
            query = query.where(Message.referral_id == referral_id)
        if batch_id:
            query = query.where(Message.batch_id == batch_id)
        query = query.order_by(Message.created_at, Message.id).limit(min(limit, 500))
        async with rt.unit_of_work() as uow:
            rows = (await uow.session.scalars(query)).all()
        return [_view(m) for m in rows]

    @router.get("/messages/{message_id}", response_model=MessageView)
    async def detail(message_id: str, district_id: Token) -> MessageView:
        async with rt.unit_of_work() as uow:
            message = await uow.session.get(Message, message_id)
        if message is None or message.district_id != district_id:
            raise NotFound(f"message {message_id} not found")
        return _view(message)

    @router.get("/message-batches/{batch_id}", response_model=BatchProgress)
    async def progress(batch_id: str, district_id: Token) -> BatchProgress:
        """An announcement's or invitation's delivery so far."""
        async with rt.unit_of_work() as uow:
            rows = (await uow.session.execute(
                select(Message.status, Message.channel, func.count())
                .where(Message.batch_id == batch_id, Message.district_id == district_id)
                .group_by(Message.status, Message.channel))).all()
        by_status: dict[str, int] = {}
        by_channel: dict[str, int] = {}
        for status, channel, count in rows:
            by_status[status] = by_status.get(status, 0) + count
            if channel and status in ("sent", "delivered"):
                by_channel[channel] = by_channel.get(channel, 0) + count
        total = sum(by_status.values())
        pending = by_status.get("queued", 0) + by_status.get("sending", 0)
        return BatchProgress(batch_id=batch_id, total=total, by_status=by_status,
                             by_channel=by_channel, done=total > 0 and pending == 0)

    async def signed_form(request: Request) -> dict[str, str]:
        form = await request.form()
        params = [(k, str(v)) for k, v in form.multi_items()]
        signature = request.headers.get(SIGNATURE_HEADER)
        query = f"?{request.url.query}" if request.url.query else ""
        candidates = {str(request.url), f"{settings.public_base_url}{request.url.path}{query}"}
        if not any(validate_signature(settings.sms_auth_token, url, params, signature)
                   for url in candidates):
            INBOUND.labels("sms", "forged").inc()
            raise Forbidden("invalid request signature")
        return dict(params)

    @router.post("/sms/inbound", response_class=Response)
    async def sms_inbound(request: Request) -> Response:
        """Twilio's incoming-message webhook: STOP/START keywords, or a family's reply."""
        form = await signed_form(request)
        async with rt.unit_of_work() as uow:
            result = await inbound.inbound_sms(
                uow, dispatcher, form.get("MessageSid") or form.get("SmsSid", ""),
                form.get("From", ""), form.get("Body", ""), utcnow())
        INBOUND.labels("sms", result).inc()
        return Response(EMPTY_TWIML, media_type="text/xml")

    @router.post("/sms/status", response_class=Response)
    async def sms_status(request: Request) -> Response:
        """Twilio's status callback: delivered, or failed/undelivered with an ErrorCode."""
        form = await signed_form(request)
        async with rt.unit_of_work() as uow:
            result = await inbound.status_callback(
                uow, dispatcher, form.get("MessageSid") or form.get("SmsSid", ""),
                form.get("MessageStatus") or form.get("SmsStatus", ""), form.get("ErrorCode"),
                utcnow())
        INBOUND.labels("sms_status", result).inc()
        return Response(status_code=204)

    @router.post("/email/inbound")
    async def email_inbound(request: Request) -> dict[str, str]:
        """An inbound-mail relay posts a family's reply here (JSON or form: to, from, text,
        message_id). The reply address names the message and carries its token."""
        if request.headers.get("content-type", "").startswith("application/json"):
            raw = await request.json()
        else:
            raw = {k: str(v) for k, v in (await request.form()).items()}
        body = EmailReply.model_validate(raw)
        async with rt.unit_of_work() as uow:
            result = await inbound.inbound_email(uow, body.to, body.sender, body.text, utcnow(),
                                                 body.message_id)
        INBOUND.labels("email", result).inc()
        if result in ("unknown_address", "bad_token"):
            raise Forbidden("not a reply address of ours")
        return {"result": result}

    @router.get("/messages/{message_id}/unsubscribe", response_class=HTMLResponse)
    async def unsubscribe_page(message_id: str, token: str) -> HTMLResponse:
        # A GET changes nothing: mail scanners open links. The button POSTs.
        action = f"/api/v1/messages/{escape(message_id)}/unsubscribe?token={escape(token)}"
        return HTMLResponse(
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head>'
            f'<body><form method="post" action="{action}"><p>Stop receiving these emails?</p>'
            '<button type="submit">Unsubscribe</button></form></body></html>')

    @router.post("/messages/{message_id}/unsubscribe", response_class=HTMLResponse)
    async def unsubscribe(message_id: str, token: str) -> HTMLResponse:
        """The page's button and RFC 8058 one-click (List-Unsubscribe-Post) both land here."""
        async with rt.unit_of_work() as uow:
            ok = await inbound.unsubscribe_email(uow, message_id, token, utcnow())
        INBOUND.labels("unsubscribe", "opt_out" if ok else "bad_token").inc()
        if not ok:
            raise NotFound("unknown unsubscribe link")
        return HTMLResponse("<!DOCTYPE html><html><body><p>You are unsubscribed.</p>"
                            "</body></html>")

    return router
