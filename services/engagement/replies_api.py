"""The coordinator's side of family replies, over HTTP: texts held because several outreach were
open at the phone and none was named (replies.py), listed and assigned by hand.

Module-level routes on ``router``, given ``EngagementRoutes`` through ``Wired``; the models are
in schemas.py."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.taxonomy import Channel
from runtime.erasure import erasure_barrier
from runtime.errors import Conflict, NotFound
from services.engagement.api import caller, field_error
from services.engagement.deps import Wired
from services.engagement.replies import apply_to, counted
from services.engagement.schemas import (
    MAX_OFFSET,
    AssignReply,
    Candidate,
    Token,
    UnassignedReplyView,
)
from services.engagement.tables import Outreach, UnassignedReply

router = APIRouter()


@router.get("/unassigned-replies", response_model=list[UnassignedReplyView])
async def unassigned(deps: Wired, district_id: Token, school_id: Token | None = None,
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
    async with deps.runtime.unit_of_work() as uow:
        rows = list((await uow.session.scalars(
            query.order_by(UnassignedReply.received_at, UnassignedReply.id)
            .limit(limit).offset(offset))).all())
        return await _views(uow.session, rows)


@router.post("/unassigned-replies/{reply_id}/assign", response_model=UnassignedReplyView)
async def assign(deps: Wired, reply_id: str, body: AssignReply, request: Request
                 ) -> UnassignedReplyView:
    """The reply becomes that outreach's answer, exactly as if the family had named it."""
    async with deps.runtime.unit_of_work() as uow:
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
            await apply_to(uow, outreach, Channel(reply.channel), reply.text,
                           reply.received_at)
            reply.status = "assigned"
            reply.outreach_id = outreach.id
            reply.assigned_by = f"coordinator:{caller(request, 'coordinator')}"
            reply.assigned_at = deps.clock()
            counted(uow, Channel(reply.channel), "assigned")
        [view] = await _views(uow.session, [reply])
    return view


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
