"""Messages over HTTP (what was sent to a family, when, on which channel, in which language),
bulk progress, and the webhooks families and providers call back on.

Webhooks and links authenticate themselves, not with a bearer token: Twilio's requests by
their X-Twilio-Signature, email replies and unsubscribe links by the message's random token.

Every route is a module-level function on ``router``; each takes what the service was built
with (``NotificationsRoutes``: its runtime, settings, dispatcher and clock) through ``Wired``.
The request and response models are in schemas.py.
"""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import escape
from sqlalchemy import func, select

from runtime.errors import DomainError, NotFound
from services.notifications import inbound
from services.notifications.deps import NotificationsRoutes, Wired
from services.notifications.lifecycle import DONE, PENDING
from services.notifications.metrics import INBOUND
from services.notifications.schemas import BatchProgress, EmailReply, MessageView, Token
from services.notifications.tables import Message
from services.notifications.twilio import SIGNATURE_HEADER, validate_signature

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

# Routes that are not behind a bearer token (see runtime.auth.Policy.public).
PUBLIC_ROUTES = frozenset({
    ("POST", "/sms/inbound"),
    ("POST", "/sms/status"),
    ("POST", "/email/inbound"),
    ("GET", "/messages/{message_id}/unsubscribe"),
    ("POST", "/messages/{message_id}/unsubscribe"),
})

router = APIRouter()


class Forbidden(DomainError):
    status_code = 403


# Staff: what was sent to a family, and a bulk request's progress.


@router.get("/messages", response_model=list[MessageView])
async def list_(deps: Wired, district_id: Token, family_id: str | None = None,
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
    async with deps.runtime.unit_of_work() as uow:
        rows = (await uow.session.scalars(query)).all()
    return [_view(m) for m in rows]


@router.get("/messages/{message_id}", response_model=MessageView)
async def detail(deps: Wired, message_id: str, district_id: Token) -> MessageView:
    async with deps.runtime.unit_of_work() as uow:
        message = await uow.session.get(Message, message_id)
    if message is None or message.district_id != district_id:
        raise NotFound(f"message {message_id} not found")
    return _view(message)


@router.get("/message-batches/{batch_id}", response_model=BatchProgress)
async def progress(deps: Wired, batch_id: str, district_id: Token) -> BatchProgress:
    """An announcement's or invitation's delivery so far."""
    async with deps.runtime.unit_of_work() as uow:
        rows = (await uow.session.execute(
            select(Message.status, Message.channel, func.count())
            .where(Message.batch_id == batch_id, Message.district_id == district_id)
            .group_by(Message.status, Message.channel))).all()
    by_status: dict[str, int] = {}
    by_channel: dict[str, int] = {}
    for status, channel, count in rows:
        by_status[status] = by_status.get(status, 0) + count
        if channel and status in DONE:
            by_channel[channel] = by_channel.get(channel, 0) + count
    total = sum(by_status.values())
    pending = sum(by_status.get(status, 0) for status in PENDING)
    return BatchProgress(batch_id=batch_id, total=total, by_status=by_status,
                         by_channel=by_channel, done=total > 0 and pending == 0)


# Providers and families: webhooks and links (PUBLIC_ROUTES).


@router.post("/sms/inbound", response_class=Response)
async def sms_inbound(deps: Wired, request: Request) -> Response:
    """Twilio's incoming-message webhook: STOP/START keywords, or a family's reply."""
    form = await signed_form(deps, request)
    async with deps.runtime.unit_of_work() as uow:
        result = await inbound.inbound_sms(
            uow, deps.dispatcher, form.get("MessageSid") or form.get("SmsSid", ""),
            form.get("From", ""), form.get("Body", ""), deps.clock())
    INBOUND.labels("sms", result).inc()
    return Response(EMPTY_TWIML, media_type="text/xml")


@router.post("/sms/status", response_class=Response)
async def sms_status(deps: Wired, request: Request) -> Response:
    """Twilio's status callback: delivered, or failed/undelivered with an ErrorCode."""
    form = await signed_form(deps, request)
    async with deps.runtime.unit_of_work() as uow:
        result = await inbound.status_callback(
            uow, deps.dispatcher, form.get("MessageSid") or form.get("SmsSid", ""),
            form.get("MessageStatus") or form.get("SmsStatus", ""), form.get("ErrorCode"),
            deps.clock())
    INBOUND.labels("sms_status", result).inc()
    return Response(status_code=204)


@router.post("/email/inbound")
async def email_inbound(deps: Wired, request: Request) -> dict[str, str]:
    """An inbound-mail relay posts a family's reply here (JSON or form: to, from, text,
    message_id). The reply address names the message and carries its token."""
    if request.headers.get("content-type", "").startswith("application/json"):
        raw = await request.json()
    else:
        raw = {k: str(v) for k, v in (await request.form()).items()}
    body = EmailReply.model_validate(raw)
    async with deps.runtime.unit_of_work() as uow:
        result = await inbound.inbound_email(uow, body.to, body.sender, body.text, deps.clock(),
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
async def unsubscribe(deps: Wired, message_id: str, token: str) -> HTMLResponse:
    """The page's button and RFC 8058 one-click (List-Unsubscribe-Post) both land here."""
    async with deps.runtime.unit_of_work() as uow:
        ok = await inbound.unsubscribe_email(uow, message_id, token, deps.clock())
    INBOUND.labels("unsubscribe", "opt_out" if ok else "bad_token").inc()
    if not ok:
        raise NotFound("unknown unsubscribe link")
    return HTMLResponse("<!DOCTYPE html><html><body><p>You are unsubscribed.</p>"
                        "</body></html>")


# What the routes share.


async def signed_form(deps: NotificationsRoutes, request: Request) -> dict[str, str]:
    """A provider's form, when its signature holds for the URL it was sent to (as we see it,
    or as the public base URL names it behind a proxy); 403 otherwise."""
    settings = deps.settings
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


def _view(m: Message) -> MessageView:
    view = MessageView.model_validate(m, from_attributes=True)
    if m.status not in PENDING:
        view.next_attempt_at = None
    return view
