"""A matched partner's contact is e-mailed a link to the referral (PartnerLinkRequested, from
partners), in the partner's first language. Sent from the handler itself: a mail server that
is down or busy retries the event until it is back (Unavailable: never dead-lettered for that),
an address it refuses for good is logged and let go, and the inbox makes a handled event's
second delivery a no-op. No family is involved: no quiet hours, no opt-out list."""

import logging

from contracts.envelope import Envelope
from contracts.events import PartnerLinkRequested
from runtime.errors import RetryLater, Unavailable
from runtime.uow import UnitOfWork
from services.notifications.deps import NotificationsDeps
from services.notifications.errors import PermanentSendError, TransientSendError
from services.notifications.providers import Outgoing
from services.notifications.rendering import render

URGENCY_LABELS = {
    "en": {"crisis": "crisis", "urgent": "urgent", "routine": "routine"},
    "es": {"crisis": "crisis", "urgent": "urgente", "routine": "de rutina"},
    "vi": {"crisis": "khủng hoảng", "urgent": "khẩn cấp", "routine": "thông thường"},
    "zh": {"crisis": "危机", "urgent": "紧急", "routine": "常规"},
    "ar": {"crisis": "أزمة", "urgent": "عاجل", "routine": "اعتيادي"},
}

log = logging.getLogger("ensemble.notifications")


def compose(ev: PartnerLinkRequested) -> Outgoing:
    subject = render("partner_link", ev.language, "subject", partner_name=ev.partner_name,
                     need=ev.need.value)
    used = subject.language
    variables = {"partner_name": ev.partner_name, "need": ev.need.value, "url": ev.url,
                 "urgency_label": URGENCY_LABELS.get(used, URGENCY_LABELS["en"])[
                     ev.urgency.value],
                 "expires": ev.expires_at.strftime("%Y-%m-%d %H:%M")}
    return Outgoing(to=ev.email, subject=subject.text,
                    text=render("partner_link", used, "txt", **variables).text,
                    html=render("partner_link", used, "html", **variables).text,
                    idempotency_key=f"partner-link-{ev.link_id}")


async def on_partner_link_requested(uow: UnitOfWork, env: Envelope, ev: PartnerLinkRequested,
                                    deps: NotificationsDeps) -> None:
    if deps.email is None:
        return
    await send_or_retry(deps, compose(ev), what=f"partner link {ev.link_id}")


async def send_or_retry(deps: NotificationsDeps, message: Outgoing, *, what: str,
                        others_have_it: bool = False) -> bool:
    """Send from the consumer; whether it was sent. A mail server that is down or busy retries
    the event until it is back (same idempotency key): a link parked after a few minutes'
    outage would never reach the partner without a hand replay. But once others of the same
    event have theirs, each retry sends them theirs again, so those retries are bounded
    (RetryLater, then parked) as any failure. An address refused for good is logged (by what,
    never the address) and let go, as nothing later would change the answer."""
    assert deps.email is not None
    try:
        await deps.email.send(message)
    except TransientSendError as exc:
        if others_have_it:
            raise RetryLater(f"{what}: {exc}") from exc
        raise Unavailable(f"{what}: {exc}") from exc
    except PermanentSendError as exc:
        log.warning("%s not sent: the mail server refused it for good (%s)", what,
                    type(exc).__name__)
        return False
    return True
