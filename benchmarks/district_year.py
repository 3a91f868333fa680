"""A district's year as the public events would carry it, made through the contracts (every
event a `contracts.events` model in its CloudEvents envelope, on its public subject), for the
insights benchmark and tests. Deterministic for a seed.

Per referral: opened; matched (or no partner); accepted or declined (then matched again);
family contacted or unreachable; in service; closed with an outcome (or left open). Around them:
families registered, partners' capacity, family events with RSVPs and attendance, messages
sent, failed and delivered, opt-outs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from contracts.envelope import Envelope
from contracts.events import (
    CapacityChanged,
    Event,
    FamilyAttended,
    FamilyContacted,
    FamilyEventScheduled,
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
    ReferralClosed,
    ReferralDeclined,
    ReferralInService,
    ReferralOpened,
)
from contracts.subjects import subject_for
from contracts.taxonomy import Channel, Consent, ContactKind, Need, Outcome, Urgency

NEEDS = [Need.mental_health, Need.dental, Need.food, Need.housing, Need.tutoring,
         Need.vision, Need.clothing, Need.medical]
WEIGHTS = [30, 15, 15, 8, 12, 8, 7, 5]
OUTCOMES = [Outcome.services_received] * 7 + [Outcome.family_declined, Outcome.no_longer_needed,
                                              Outcome.unable_to_contact]
LANGUAGES = ["en"] * 6 + ["es"] * 3 + ["vi"]


@dataclass(frozen=True)
class Published:
    subject: str
    envelope: Envelope

    @property
    def data(self) -> bytes:
        return self.envelope.to_bytes()


def _wrap(event: Event, district: str, school: str | None, at: datetime) -> Published:
    env = Envelope.wrap(event, source="/benchmarks/district-year", district=district,
                        school=school, subject=None)
    return Published(subject_for(type(event), district), env.model_copy(update={"time": at}))


def district_year(referrals: int, *, district: str, schools: list[str], end: datetime,
                  seed: int = 7) -> Iterator[Published]:
    """The events of ``referrals`` referrals opened over the year before ``end``."""
    rng = random.Random(seed)
    start = end - timedelta(days=365)
    services = {need: [f"svc-{need.value}-{i}" for i in range(3)] for need in NEEDS}
    partners = {s: f"partner-{i % 12}" for i, s in
                enumerate(s for ss in services.values() for s in ss)}
    for school in schools:
        for need_services in services.values():
            for service in need_services:
                yield _wrap(CapacityChanged(partner_id=partners[service], service_id=service,
                                            school_id=school, capacity=rng.randint(5, 40),
                                            reserved=rng.randint(0, 5)), district, school, start)
    yield from _engagement(rng, district, schools, start, end)
    for n in range(referrals):
        yield from _referral(rng, n, district, schools, start, services, partners)


def _referral(rng: random.Random, n: int, district: str, schools: list[str], start: datetime,
              services: dict[Need, list[str]], partners: dict[str, str]) -> Iterator[Published]:
    school = rng.choice(schools)
    rid, fid = f"ref-{n:06d}", f"fam-{n:06d}"
    need = rng.choices(NEEDS, WEIGHTS)[0]
    t = start + timedelta(seconds=rng.randint(0, 365 * 86400 - 1))
    language = rng.choice(LANGUAGES)
    out = [_wrap(FamilyRegistered(family_id=fid, school_id=school, preferred_language=language,
                                  preferred_channel=Channel.sms), district, school, t),
           _wrap(ReferralOpened(referral_id=rid, school_id=school, student_ref=f"stu-{n}",
                                family_id=fid, need=need, urgency=Urgency.routine,
                                consent=Consent.given, opened_at=t), district, school, t)]
    for attempt in (1, 2):
        t += timedelta(hours=rng.expovariate(1 / 6))
        if rng.random() < 0.08:
            out.append(_wrap(NoPartnerAvailable(referral_id=rid, family_id=fid, need=need,
                                                reason="no capacity"), district, school, t))
            return iter(out)
        service = rng.choice(services[need])
        partner = partners[service]
        out.append(_wrap(PartnerMatched(
            referral_id=rid, family_id=fid, partner_id=partner, service_id=service,
            partner_name=partner.replace("-", " ").title(), need=need, urgency=Urgency.routine,
            score=1.0, reasons=[], attempt=attempt), district, school, t))
        out += _messages(rng, rid, fid, language, district, school, t)
        t += timedelta(hours=rng.expovariate(1 / 20))
        if attempt == 2 or rng.random() < 0.8:
            out.append(_wrap(ReferralAccepted(referral_id=rid, partner_id=partner,
                                              service_id=service), district, school, t))
            break
        out.append(_wrap(ReferralDeclined(referral_id=rid, partner_id=partner, service_id=service,
                                          reason="full"), district, school, t))
    t += timedelta(days=rng.expovariate(1 / 2))
    if rng.random() < 0.1:
        out.append(_wrap(FamilyUnreachable(family_id=fid, referral_id=rid, outreach_id=f"o-{n}",
                                           attempts=3), district, school, t))
    else:
        out.append(_wrap(FamilyContacted(family_id=fid, referral_id=rid, kind=ContactKind.sms,
                                         contacted_at=t), district, school, t))
        t += timedelta(days=rng.expovariate(1 / 5))
        out.append(_wrap(ReferralInService(referral_id=rid, partner_id=partner), district,
                         school, t))
    if rng.random() < 0.85:
        t += timedelta(days=rng.expovariate(1 / 20))
        out.append(_wrap(ReferralClosed(referral_id=rid, outcome=rng.choice(OUTCOMES),
                                        partner_id=partner, closed_at=t), district, school, t))
    return iter(out)


def _messages(rng: random.Random, rid: str, fid: str, language: str, district: str,
              school: str, t: datetime) -> list[Published]:
    nid = f"msg-{rid}-{rng.randrange(10**9)}"
    channel = Channel.sms if rng.random() < 0.7 else Channel.email
    if rng.random() < 0.04:
        return [_wrap(NotificationFailed(notification_id=nid, outreach_id=nid, family_id=fid,
                                         referral_id=rid, channel=channel, reason="30006"),
                      district, school, t)]
    out = [_wrap(NotificationSent(notification_id=nid, outreach_id=nid, family_id=fid,
                                  referral_id=rid, channel=channel, language=language),
                 district, school, t),
           _wrap(NotificationDelivered(notification_id=nid, outreach_id=nid, family_id=fid,
                                       referral_id=rid, channel=channel,
                                       delivered_at=t + timedelta(seconds=5)),
                 district, school, t + timedelta(seconds=5))]
    if rng.random() < 0.01:
        out.append(_wrap(FamilyOptedOut(family_id=fid, channel=channel, at=t), district, school,
                         t + timedelta(minutes=3)))
    return out


def _engagement(rng: random.Random, district: str, schools: list[str], start: datetime,
                end: datetime) -> Iterator[Published]:
    """Two family events a month at each school, 40 families invited to each."""
    for school in schools:
        when = start + timedelta(days=10)
        k = 0
        while when < end:
            eid = f"ev-{school}-{k}"
            yield _wrap(FamilyEventScheduled(event_id=eid, school_id=school,
                                             title=f"Family night {k}", starts_at=when),
                        district, school, when - timedelta(days=10))
            for f in range(40):
                fid = f"evfam-{school}-{k}-{f}"
                answer = rng.random()
                if answer < 0.5:
                    yield _wrap(FamilyRsvped(event_id=eid, family_id=fid, response="yes",
                                             via="sms"), district, school, when - timedelta(days=3))
                    if rng.random() < 0.7:
                        yield _wrap(FamilyAttended(event_id=eid, family_id=fid), district,
                                    school, when)
                elif answer < 0.65:
                    yield _wrap(FamilyRsvped(event_id=eid, family_id=fid, response="no",
                                             via="link"), district, school,
                                when - timedelta(days=3))
            when += timedelta(days=15)
            k += 1


async def publish(js: object, items: list[Published], window: int = 256) -> None:
    """Publish with the event id as Nats-Msg-Id, ``window`` acks in flight."""
    import asyncio

    pending: list[asyncio.Future[object]] = []
    for item in items:
        pending.append(await js.publish_async(  # type: ignore[attr-defined]
            item.subject, item.data, headers={"Nats-Msg-Id": item.envelope.id}))
        if len(pending) >= window:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
