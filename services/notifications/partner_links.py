"""A matched partner's contact is e-mailed a link to the referral (PartnerLinkRequested, from
partners), in the partner's first language. Sent from the handler itself: a failure to send
raises, so the event is delivered again (JetStream's retries), and the inbox makes a handled
event's second delivery a no-op. No family is involved: no quiet hours, no opt-out list."""

from contracts.envelope import Envelope
from contracts.events import PartnerLinkRequested
from runtime.uow import UnitOfWork
from services.notifications.deps import NotificationsDeps
from services.notifications.providers import Outgoing
from services.notifications.rendering import render

URGENCY_LABELS = {
    "en": {"crisis": "crisis", "urgent": "urgent", "routine": "routine"},
    "es": {"crisis": "crisis", "urgent": "urgente", "routine": "de rutina"},
    "vi": {"crisis": "khủng hoảng", "urgent": "khẩn cấp", "routine": "thông thường"},
    "zh": {"crisis": "危机", "urgent": "紧急", "routine": "常规"},
    "ar": {"crisis": "أزمة", "urgent": "عاجل", "routine": "اعتيادي"},
}


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
    await deps.email.send(compose(ev))
