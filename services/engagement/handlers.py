"""How engagement turns a match into outreach, a sent message into a wait for an answer, and an
answer into a contact (or an RSVP); and how opt-outs reach the family record."""


from sqlalchemy import select

from contracts.envelope import Envelope
from contracts.events import (
    Event,
    FamilyOptedIn,
    FamilyOptedOut,
    FamilyReplied,
    NotificationFailed,
    NotificationSent,
    PartnerMatched,
)
from contracts.taxonomy import Channel, ContactKind
from runtime import prefetch
from runtime.erasure import erasure_barrier
from runtime.errors import RetryLater
from runtime.tracing import current_fields
from runtime.uow import UnitOfWork
from services.engagement.contacts import (
    answered,
    awaiting_reply,
    log_contact,
    mark_unreachable,
    request_attempt,
)
from services.engagement.deps import EngagementDeps
from services.engagement.lifecycle import OutreachStatus
from services.engagement.replies import attribute_text
from services.engagement.rsvp import parse_rsvp, record_rsvp
from services.engagement.tables import Family, Invitation, Outreach

# Outreach rows are read FOR UPDATE: a coordinator may mark one contacted over HTTP while an
# event about it is applied, and on PostgreSQL the later writer would undo the other. A batch
# loads its families and outreach first, one statement each (PREFETCH, runtime.prefetch).


async def on_partner_matched(uow: UnitOfWork, env: Envelope, ev: PartnerMatched,
                             deps: EngagementDeps) -> None:
    await erasure_barrier(uow)  # an erasure in progress commits first, or waits for this
    family = await prefetch.get(uow, Family, ev.family_id)
    if family is None or family.district_id != env.districtid:
        raise RetryLater(f"family {ev.family_id} not registered here")
    now = deps.clock()
    # Derived from the PartnerMatched applied: a replay after a restore makes the same outreach.
    outreach = Outreach(id=uow.new_id("outreach"), district_id=family.district_id,
                        family_id=family.id, referral_id=ev.referral_id, kind="partner_matched",
                        status=OutreachStatus.requested, attempts=0, urgency=ev.urgency.value,
                        variables={"partner_name": ev.partner_name, "need": ev.need.value},
                        correlation_id=env.correlationid, created_at=now, updated_at=now,
                        **current_fields())
    uow.session.add(outreach)
    await request_attempt(uow, deps.districts, outreach, family, now)


async def on_notification_sent(uow: UnitOfWork, env: Envelope, ev: NotificationSent,
                               deps: EngagementDeps) -> None:
    outreach = await prefetch.get(uow, Outreach, ev.outreach_id, lock=True)
    if outreach is None:
        return  # not a referral's outreach
    # An attempt, not a contact: wait for the family's answer before trying again.
    awaiting_reply(outreach, deps.clock(), deps.settings.outreach_reply_wait_seconds)


async def on_notification_failed(uow: UnitOfWork, env: Envelope, ev: NotificationFailed,
                                 deps: EngagementDeps) -> None:
    outreach = await prefetch.get(uow, Outreach, ev.outreach_id, lock=True)
    if outreach is not None and ev.permanent:  # every channel the family allows failed for good
        mark_unreachable(uow, outreach, deps.clock())  # unless it ended meanwhile


async def on_family_replied(uow: UnitOfWork, env: Envelope, ev: FamilyReplied,
                            deps: EngagementDeps) -> None:
    await erasure_barrier(uow)
    family = await prefetch.get(uow, Family, ev.family_id)
    if family is None or family.district_id != env.districtid or family.erased_at is not None:
        return  # an erased family's late answer is not kept
    # A text names no message: find the outreach it answers (or hold it for a person).
    if ev.channel == Channel.sms and await attribute_text(uow, family, ev, env.id):
        return
    kind = ContactKind(ev.channel.value)
    outreach = (await prefetch.get(uow, Outreach, ev.outreach_id, lock=True)
                if ev.outreach_id else None)
    if outreach is not None and answered(outreach, ev.received_at):
        # Even after it was given up on: an answer is an answer.
        log_contact(uow, family, kind=kind, at=ev.received_at, by="family",
                    referral_id=outreach.referral_id, outreach_id=outreach.id, note=ev.text,
                    correlation=outreach.correlation_id)
        return
    if ev.batch_id and ev.kind == "family_event_invitation":
        invitation = await uow.session.scalar(select(Invitation).where(
            Invitation.event_id == ev.batch_id, Invitation.family_id == family.id))
        answer = parse_rsvp(ev.text)
        if invitation is not None and answer:
            record_rsvp(uow, invitation, answer, ev.channel.value, ev.received_at)
    log_contact(uow, family, kind=kind, at=ev.received_at, by="family",
                referral_id=ev.referral_id, note=ev.text, outcome="replied")


async def on_opted_out(uow: UnitOfWork, env: Envelope, ev: FamilyOptedOut,
                       deps: EngagementDeps) -> None:
    await _set_opt_out(uow, env, ev.family_id, ev.channel, True)


async def on_opted_in(uow: UnitOfWork, env: Envelope, ev: FamilyOptedIn,
                      deps: EngagementDeps) -> None:
    await _set_opt_out(uow, env, ev.family_id, ev.channel, False)


HANDLERS = {
    PartnerMatched: on_partner_matched,
    NotificationSent: on_notification_sent,
    NotificationFailed: on_notification_failed,
    FamilyReplied: on_family_replied,
    FamilyOptedOut: on_opted_out,
    FamilyOptedIn: on_opted_in,
}


async def _set_opt_out(uow: UnitOfWork, env: Envelope, family_id: str, channel: Channel,
                       value: bool) -> None:
    family = await prefetch.get(uow, Family, family_id)
    if family is None or family.district_id != env.districtid:
        return
    if channel == Channel.sms:
        family.sms_opted_out = value
    else:
        family.email_opted_out = value


Batch = list[tuple[Envelope, Event]]


async def load_families(uow: UnitOfWork, batch: Batch, deps: EngagementDeps) -> None:
    await prefetch.load(uow, Family, [ev.family_id for _, ev in batch])


async def load_outreach(uow: UnitOfWork, batch: Batch, deps: EngagementDeps) -> None:
    """The outreach a batch's events are about, locked as the handlers would."""
    await prefetch.load(uow, Outreach, [ev.outreach_id for _, ev in batch], lock=True)


async def load_replies(uow: UnitOfWork, batch: Batch, deps: EngagementDeps) -> None:
    """After the erasure barrier, as the handler reads them: families, then their outreach."""
    await erasure_barrier(uow)
    await load_families(uow, batch, deps)
    await prefetch.load(uow, Outreach, [ev.outreach_id for _, ev in batch if ev.outreach_id],
                        lock=True)


async def load_matched(uow: UnitOfWork, batch: Batch, deps: EngagementDeps) -> None:
    await erasure_barrier(uow)
    await load_families(uow, batch, deps)


PREFETCH = {
    PartnerMatched: load_matched,
    NotificationSent: load_outreach,
    NotificationFailed: load_outreach,
    FamilyReplied: load_replies,
    FamilyOptedOut: load_families,
    FamilyOptedIn: load_families,
}
