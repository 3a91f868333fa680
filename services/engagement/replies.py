"""Which outreach a family's text answers. A text names no message, and one phone may have
several referrals' outreach open at once (one family's, or families sharing the phone), so a
reply is never simply given to the message we wrote last:

- one outreach open at the phone: the reply is its answer;
- several: a text that starts with an outreach's reply code (sent in its message whenever
  another one is open at the phone) answers that one, the code stripped; any other text is
  held as an unassigned reply for a coordinator to assign, never guessed;
- an RSVP-shaped answer to a family-event invitation (the last message) stays the RSVP;
- none open: it goes to the message we wrote last, as before (a late answer still counts).

Email needs none of this: its signed reply address names the message it answers."""

import re
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import FamilyReplied
from contracts.taxonomy import Channel, ContactKind
from runtime.db import utcnow
from runtime.erasure import erasure_barrier
from runtime.errors import Conflict, NotFound
from runtime.outbox import UnitOfWork
from runtime.service import ServiceRuntime
from services.engagement.api import MAX_OFFSET, Token, caller, field_error
from services.engagement.contacts import log_contact, open_at_phone
from services.engagement.rsvp import parse_rsvp
from services.engagement.tables import Family, Outreach, UnassignedReply

# "2 yes", "#2: yes", "٢ نعم", "2好的"; not "3pm" or "2nd" (a digit then a Latin letter).
LEADING_CODE = re.compile(r"\s*#?(\d{1,2})(?!\d)(?![A-Za-z])[\s.,:;)\-\u3001\uff0c\u3002\uff1a]*")

REPLIES = Counter("ensemble_family_replies", "Family replies by where they went", ["channel",
                  "result"])


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
    if outreach.status == "contacted":
        log_contact(uow, family, kind=kind, at=at, by="family", referral_id=outreach.referral_id,
                    note=text, outcome="replied", correlation=outreach.correlation_id)
        return
    outreach.status = "contacted"
    outreach.next_check_at = None
    outreach.updated_at = at
    log_contact(uow, family, kind=kind, at=at, by="family", referral_id=outreach.referral_id,
                outreach_id=outreach.id, note=text, correlation=outreach.correlation_id)


def _counted(uow: UnitOfWork, channel: Channel, result: str) -> None:
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
        await _apply_to(uow, coded[0], ev.channel, rest, ev.received_at)
        _counted(uow, ev.channel, "reply_code")
        return True
    if ev.kind == "family_event_invitation" and ev.batch_id and not coded \
            and parse_rsvp(ev.text):
        return False
    if len(candidates) == 1:
        await _apply_to(uow, candidates[0], ev.channel, ev.text, ev.received_at)
        _counted(uow, ev.channel, "only_open")
        return True
    if len(candidates) > 1:
        await _hold(uow, candidates, ev, event_id)
        _counted(uow, ev.channel, "held")
        return True
    return False


async def _apply_to(uow: UnitOfWork, outreach: Outreach, channel: Channel, text: str,
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


# --- the coordinator's side: replies waiting to be assigned ----------------------------------


class Candidate(BaseModel):
    outreach_id: str
    family_id: str
    referral_id: str | None
    reply_code: str | None
    status: str


class UnassignedReplyView(BaseModel):
    id: str
    school_id: str
    channel: str
    text: str
    received_at: datetime
    status: str = Field(description="held, or assigned (to outreach_id)")
    candidates: list[Candidate] = Field(description="the outreach it may answer, newest first")
    outreach_id: str | None
    assigned_by: str | None
    assigned_at: datetime | None


class AssignReply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    outreach_id: str = Field(max_length=64, description="one of the reply's candidates")


async def _views(session: AsyncSession, rows: list[UnassignedReply]
                 ) -> list[UnassignedReplyView]:
    ids = sorted({c for r in rows for c in r.candidates})
    outreach = {o.id: o for o in (await session.scalars(
        select(Outreach).where(Outreach.id.in_(ids)))).all()} if ids else {}
    return [UnassignedReplyView(
        id=r.id, school_id=r.school_id, channel=r.channel, text=r.text,
        received_at=r.received_at, status=r.status, outreach_id=r.outreach_id,
        assigned_by=r.assigned_by, assigned_at=r.assigned_at,
        candidates=[Candidate(outreach_id=o.id, family_id=o.family_id, referral_id=o.referral_id,
                              reply_code=o.reply_code, status=o.status)
                    for o in (outreach.get(c) for c in r.candidates) if o is not None])
        for r in rows]


def build_replies_router(rt: ServiceRuntime) -> APIRouter:
    router = APIRouter()

    @router.get("/unassigned-replies", response_model=list[UnassignedReplyView])
    async def unassigned(district_id: Token, school_id: Token | None = None,
                         status: Literal["held", "assigned"] = "held",
                         limit: Annotated[int, Query(ge=1, le=500)] = 100,
                         offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                         ) -> list[UnassignedReplyView]:
        """Texts from a phone with several open outreach that named none: the coordinator
        assigns each (oldest first)."""
        query = select(UnassignedReply).where(UnassignedReply.district_id == district_id,
                                              UnassignedReply.status == status)
        if school_id:
            query = query.where(UnassignedReply.school_id == school_id)
        async with rt.unit_of_work() as uow:
            rows = list((await uow.session.scalars(
                query.order_by(UnassignedReply.received_at, UnassignedReply.id)
                .limit(limit).offset(offset))).all())
            return await _views(uow.session, rows)

    @router.post("/unassigned-replies/{reply_id}/assign", response_model=UnassignedReplyView)
    async def assign(reply_id: str, body: AssignReply, request: Request
                     ) -> UnassignedReplyView:
        """The reply becomes that outreach's answer, exactly as if the family had named it."""
        async with rt.unit_of_work() as uow:
            await erasure_barrier(uow)
            reply = await uow.session.get(UnassignedReply, reply_id, with_for_update=True)
            if reply is None or reply.district_id != body.district_id:
                raise NotFound(f"unassigned reply {reply_id} not found")
            if body.outreach_id not in reply.candidates:
                raise field_error("outreach_id", "not one of the reply's candidates")
            if reply.status == "assigned":
                if reply.outreach_id != body.outreach_id:
                    raise Conflict(f"reply {reply_id} is already assigned to outreach "
                                   f"{reply.outreach_id}")
            else:
                outreach = await uow.session.get(Outreach, body.outreach_id,
                                                 with_for_update=True)
                if outreach is None:
                    raise NotFound(f"outreach {body.outreach_id} not found")
                await _apply_to(uow, outreach, Channel(reply.channel), reply.text,
                                reply.received_at)
                reply.status = "assigned"
                reply.outreach_id = outreach.id
                reply.assigned_by = f"coordinator:{caller(request, 'coordinator')}"
                reply.assigned_at = utcnow()
                _counted(uow, Channel(reply.channel), "assigned")
            [view] = await _views(uow.session, [reply])
        return view

    return router
