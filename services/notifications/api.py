"""Message status over HTTP (what was sent to a family, when, on which channel)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from runtime.errors import NotFound
from runtime.service import ServiceRuntime
from services.notifications.tables import Message

Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class MessageView(BaseModel):
    id: str
    family_id: str
    referral_id: str | None
    kind: str
    status: str
    channel: str | None
    language: str
    used_language: str | None
    fell_back: bool
    attempts: int
    created_at: datetime
    sent_at: datetime | None


def build_router(rt: ServiceRuntime) -> APIRouter:
    router = APIRouter()

    @router.get("/messages", response_model=list[MessageView])
    async def list_(district_id: Token, family_id: str | None = None,
                    referral_id: str | None = None, limit: int = 100) -> list[MessageView]:
        query = select(Message).where(Message.district_id == district_id)
        if family_id:
            query = query.where(Message.family_id == family_id)
        if referral_id:
            query = query.where(Message.referral_id == referral_id)
        query = query.order_by(Message.created_at).limit(min(limit, 500))
        async with rt.unit_of_work() as uow:
            rows = (await uow.session.scalars(query)).all()
        return [MessageView.model_validate(m, from_attributes=True) for m in rows]

    @router.get("/messages/{message_id}", response_model=MessageView)
    async def detail(message_id: str, district_id: Token) -> MessageView:
        async with rt.unit_of_work() as uow:
            message = await uow.session.get(Message, message_id)
        if message is None or message.district_id != district_id:
            raise NotFound(f"message {message_id} not found")
        return MessageView.model_validate(message, from_attributes=True)

    return router
