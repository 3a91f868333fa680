"""Which outreach a family's text answers. A text names no message, and one phone may have
several referrals' outreach open at once (one family's, or families sharing the phone), so a
reply is never simply given to the message we wrote last:

- one outreach open at the phone: the reply is its answer;
- several: a text that starts with an outreach's reply code (sent in its message whenever
  another one is open at the phone) answers that one, the code stripped; any other text is
  held as an unassigned reply for a coordinator to assign, never guessed;
- an RSVP-shaped answer to a family-event invitation (the last message) stays the RSVP;
- none open: it goes to the message we wrote last, as before (a late answer still counts).

Email needs none of this: its signed reply address names the message it answers. The
coordinator's side (held replies, assigned by hand) is replies_api.py."""

import re
from datetime import datetime

from contracts.events import FamilyReplied
from contracts.taxonomy import Channel, ContactKind
from runtime.errors import NotFound
from runtime.uow import UnitOfWork
from services.engagement.contacts import answered, log_contact, open_at_phone
from services.engagement.metrics import REPLIES
from services.engagement.rsvp import parse_rsvp
from services.engagement.tables import Family, Outreach, UnassignedReply

# "2 yes", "#2: yes", "٢ نعم", "2好的"; not "3pm" or "2nd" (a digit then a Latin letter).
LEADING_CODE = re.compile(r"\s*#?(\d{1,2})(?!\d)(?![A-Za-z])[\s.,:;)\-\u3001\uff0c\u3002\uff1a]*")


def split_code(text: str) -> tuple[str | None, str]:
    """The leading reply code (any script's digits, as "1".."99") and the rest of the text."""
    match = LEADING_CODE.match(text)
    if not match:
        return None, text
    rest = text[match.end():].strip()
    return str(int(match[1])), rest or text.strip()


def apply_reply(uow: UnitOfWork, family: Family, outreach: Outreach, channel: Channel,
                text: str, at: datetime) -> None:
    """An answer to an outreach: the family is contacted (FamilyContacted), even if we had
    given up on it; a second answer is logged as a reply."""
    kind = ContactKind(channel.value)
    if not answered(outreach, at):
        log_contact(uow, family, kind=kind, at=at, by="family", referral_id=outreach.referral_id,
                    note=text, outcome="replied", correlation=outreach.correlation_id)
        return
    log_contact(uow, family, kind=kind, at=at, by="family", referral_id=outreach.referral_id,
                outreach_id=outreach.id, note=text, correlation=outreach.correlation_id)


def counted(uow: UnitOfWork, channel: Channel, result: str) -> None:
    uow.after_commit.append(lambda: REPLIES.labels(channel.value, result).inc())


async def attribute_text(uow: UnitOfWork, family: Family, ev: FamilyReplied,
                         event_id: str) -> bool:
    """Apply an SMS reply to the outreach it answers, or hold it; False when it is not about
    an open outreach (an RSVP, or nothing open) and goes where the message we wrote last
    sends it."""
    phone = ev.phone or family.phone
    candidates = await open_at_phone(uow.session, family.district_id, phone, ev.family_id,
                                     lock=True) if phone else []
    code, rest = split_code(ev.text)
    # Codes are shown only while several are open; alone, "1" is just a word (an RSVP's yes).
    coded = [o for o in candidates if code is not None and o.reply_code == code] \
        if len(candidates) > 1 else []
    if len(coded) == 1:
        await apply_to(uow, coded[0], ev.channel, rest, ev.received_at)
        counted(uow, ev.channel, "reply_code")
        return True
    if ev.kind == "family_event_invitation" and ev.batch_id and not coded \
            and parse_rsvp(ev.text):
        return False
    if len(candidates) == 1:
        await apply_to(uow, candidates[0], ev.channel, ev.text, ev.received_at)
        counted(uow, ev.channel, "only_open")
        return True
    if len(candidates) > 1:
        await _hold(uow, candidates, ev, event_id)
        counted(uow, ev.channel, "held")
        return True
    return False


async def apply_to(uow: UnitOfWork, outreach: Outreach, channel: Channel, text: str,
                    at: datetime) -> None:
    family = await uow.session.get(Family, outreach.family_id)
    if family is None:  # another school's family, for a coordinator
        raise NotFound(f"outreach {outreach.id} not found")
    apply_reply(uow, family, outreach, channel, text, at)


async def _hold(uow: UnitOfWork, candidates: list[Outreach], ev: FamilyReplied,
                event_id: str) -> None:
    if await uow.session.get(UnassignedReply, event_id) is not None:
        return
    newest = await uow.session.get(Family, candidates[0].family_id)
    assert newest is not None
    uow.session.add(UnassignedReply(
        id=event_id, district_id=newest.district_id, school_id=newest.school_id,
        channel=ev.channel.value, text=ev.text, received_at=ev.received_at,
        candidates=[o.id for o in candidates], status="held"))
