"""Every public event insights keeps becomes one row of its store, keyed by the event's id (the
consumer's inbox applies each once). No handler reads or changes another row, so replaying the
streams in any order (`ensemble insights rebuild`) gives the same store."""

from typing import Any

from contracts.envelope import Envelope
from contracts.events import (
    CapacityChanged,
    FamilyAttended,
    FamilyContacted,
    FamilyEventScheduled,
    FamilyOptedIn,
    FamilyOptedOut,
    FamilyRegistered,
    FamilyRsvped,
    FamilyUnreachable,
    NoPartnerAvailable,
    NotificationDelivered,
    NotificationFailed,
    NotificationSent,
    PartnerMatched,
    ReferralAccepted,
    ReferralCancelled,
    ReferralClosed,
    ReferralDeclined,
    ReferralInService,
    ReferralOpened,
)
from runtime.uow import UnitOfWork
from services.insights.tables import (
    CapacityFact,
    FamilyEventFact,
    FamilyFact,
    MessageFact,
    ReferralFact,
    ResponseFact,
    StepFact,
)


def _step(uow: UnitOfWork, env: Envelope, referral_id: str, step: str, **fields: Any) -> None:
    fields.setdefault("at", env.time)
    uow.session.add(StepFact(event_id=env.id, district_id=env.districtid,
                             school_id=env.schoolid, referral_id=referral_id, step=step,
                             **fields))


async def on_referral_opened(uow: UnitOfWork, env: Envelope, ev: ReferralOpened,
                             _deps: object) -> None:
    # The student reference is not kept: the pack counts referrals, never students.
    uow.session.add(ReferralFact(event_id=env.id, district_id=env.districtid,
                                 school_id=ev.school_id, referral_id=ev.referral_id,
                                 need=ev.need.value, urgency=ev.urgency.value,
                                 opened_at=ev.opened_at))


async def on_partner_matched(uow: UnitOfWork, env: Envelope, ev: PartnerMatched,
                             _deps: object) -> None:
    _step(uow, env, ev.referral_id, "matched", partner_id=ev.partner_id,
          partner_name=ev.partner_name, service_id=ev.service_id, need=ev.need.value)


async def on_no_partner(uow: UnitOfWork, env: Envelope, ev: NoPartnerAvailable,
                        _deps: object) -> None:
    _step(uow, env, ev.referral_id, "no_partner", need=ev.need.value)


async def on_referral_accepted(uow: UnitOfWork, env: Envelope, ev: ReferralAccepted,
                               _deps: object) -> None:
    _step(uow, env, ev.referral_id, "accepted", partner_id=ev.partner_id,
          service_id=ev.service_id)


async def on_referral_declined(uow: UnitOfWork, env: Envelope, ev: ReferralDeclined,
                               _deps: object) -> None:
    _step(uow, env, ev.referral_id, "declined", partner_id=ev.partner_id,
          service_id=ev.service_id)


async def on_referral_in_service(uow: UnitOfWork, env: Envelope, ev: ReferralInService,
                                 _deps: object) -> None:
    _step(uow, env, ev.referral_id, "in_service", partner_id=ev.partner_id)


async def on_referral_closed(uow: UnitOfWork, env: Envelope, ev: ReferralClosed,
                             _deps: object) -> None:
    _step(uow, env, ev.referral_id, "closed", at=ev.closed_at, outcome=ev.outcome.value,
          partner_id=ev.partner_id, service_id=ev.service_id)


async def on_referral_cancelled(uow: UnitOfWork, env: Envelope, ev: ReferralCancelled,
                                _deps: object) -> None:
    _step(uow, env, ev.referral_id, "cancelled", partner_id=ev.partner_id)


async def on_family_contacted(uow: UnitOfWork, env: Envelope, ev: FamilyContacted,
                              _deps: object) -> None:
    if ev.referral_id:  # contacts about no referral are not part of a referral's timeline
        _step(uow, env, ev.referral_id, "contacted", at=ev.contacted_at)


async def on_family_unreachable(uow: UnitOfWork, env: Envelope, ev: FamilyUnreachable,
                                _deps: object) -> None:
    if ev.referral_id:
        _step(uow, env, ev.referral_id, "unreachable")


async def on_capacity_changed(uow: UnitOfWork, env: Envelope, ev: CapacityChanged,
                              _deps: object) -> None:
    uow.session.add(CapacityFact(event_id=env.id, district_id=env.districtid,
                                 school_id=ev.school_id or env.schoolid,
                                 partner_id=ev.partner_id, service_id=ev.service_id,
                                 capacity=ev.capacity, reserved=ev.reserved, at=env.time))


async def on_family_registered(uow: UnitOfWork, env: Envelope, ev: FamilyRegistered,
                               _deps: object) -> None:
    uow.session.add(FamilyFact(
        event_id=env.id, district_id=env.districtid, school_id=ev.school_id,
        family_id=ev.family_id, language=ev.preferred_language,
        channel=ev.preferred_channel.value if ev.preferred_channel else None, at=env.time))


async def on_family_event_scheduled(uow: UnitOfWork, env: Envelope, ev: FamilyEventScheduled,
                                    _deps: object) -> None:
    uow.session.add(FamilyEventFact(event_id=env.id, district_id=env.districtid,
                                    school_id=ev.school_id, family_event_id=ev.event_id,
                                    title=ev.title, starts_at=ev.starts_at, at=env.time))


def _response(uow: UnitOfWork, env: Envelope, event_id: str, family_id: str, kind: str) -> None:
    uow.session.add(ResponseFact(event_id=env.id, district_id=env.districtid,
                                 school_id=env.schoolid, family_event_id=event_id,
                                 family_id=family_id, kind=kind, at=env.time))


async def on_family_rsvped(uow: UnitOfWork, env: Envelope, ev: FamilyRsvped,
                           _deps: object) -> None:
    _response(uow, env, ev.event_id, ev.family_id, "rsvp_yes" if ev.response == "yes"
              else "rsvp_no")


async def on_family_attended(uow: UnitOfWork, env: Envelope, ev: FamilyAttended,
                             _deps: object) -> None:
    _response(uow, env, ev.event_id, ev.family_id, "attended")


def _message(uow: UnitOfWork, env: Envelope, kind: str, family_id: str, **fields: Any) -> None:
    fields.setdefault("at", env.time)
    uow.session.add(MessageFact(event_id=env.id, district_id=env.districtid,
                                school_id=env.schoolid, family_id=family_id, kind=kind,
                                **fields))


async def on_notification_sent(uow: UnitOfWork, env: Envelope, ev: NotificationSent,
                               _deps: object) -> None:
    _message(uow, env, "sent", ev.family_id, notification_id=ev.notification_id,
             channel=ev.channel.value, language=ev.language)


async def on_notification_failed(uow: UnitOfWork, env: Envelope, ev: NotificationFailed,
                                 _deps: object) -> None:
    _message(uow, env, "failed", ev.family_id, notification_id=ev.notification_id,
             channel=ev.channel.value if ev.channel else None, permanent=ev.permanent)


async def on_notification_delivered(uow: UnitOfWork, env: Envelope, ev: NotificationDelivered,
                                    _deps: object) -> None:
    _message(uow, env, "delivered", ev.family_id, notification_id=ev.notification_id,
             channel=ev.channel.value, at=ev.delivered_at)


async def on_family_opted_out(uow: UnitOfWork, env: Envelope, ev: FamilyOptedOut,
                              _deps: object) -> None:
    _message(uow, env, "opted_out", ev.family_id, channel=ev.channel.value, at=ev.at)


async def on_family_opted_in(uow: UnitOfWork, env: Envelope, ev: FamilyOptedIn,
                             _deps: object) -> None:
    _message(uow, env, "opted_in", ev.family_id, channel=ev.channel.value, at=ev.at)


# The public events the pack and the digest are made of; each its own durable consumer.
HANDLERS = {
    ReferralOpened: on_referral_opened,
    PartnerMatched: on_partner_matched,
    NoPartnerAvailable: on_no_partner,
    ReferralAccepted: on_referral_accepted,
    ReferralDeclined: on_referral_declined,
    ReferralInService: on_referral_in_service,
    ReferralClosed: on_referral_closed,
    ReferralCancelled: on_referral_cancelled,
    FamilyContacted: on_family_contacted,
    FamilyUnreachable: on_family_unreachable,
    CapacityChanged: on_capacity_changed,
    FamilyRegistered: on_family_registered,
    FamilyEventScheduled: on_family_event_scheduled,
    FamilyRsvped: on_family_rsvped,
    FamilyAttended: on_family_attended,
    NotificationSent: on_notification_sent,
    NotificationFailed: on_notification_failed,
    NotificationDelivered: on_notification_delivered,
    FamilyOptedOut: on_family_opted_out,
    FamilyOptedIn: on_family_opted_in,
}
