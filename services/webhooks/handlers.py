"""One consumer per public event type, all answered by the same handler: each event becomes a
delivery row per subscribed endpoint of its district, in the consumer's transaction (the inbox
makes it once per event)."""

from uuid import uuid4

from sqlalchemy import select

from contracts.asyncapi import public_events
from contracts.envelope import Envelope
from contracts.events import Event
from runtime.uow import UnitOfWork
from services.webhooks.deps import WebhooksDeps
from services.webhooks.lifecycle import Status
from services.webhooks.tables import Delivery, Endpoint


async def on_public_event(uow: UnitOfWork, env: Envelope, _event: Event,
                          deps: WebhooksDeps) -> None:
    """A pending delivery of ``env`` for each endpoint of its district that subscribed to it;
    the dispatcher is woken once they are committed."""
    query = select(Endpoint).where(Endpoint.district_id == env.districtid)
    endpoints = (await uow.session.scalars(query)).all()
    wanted = [e for e in endpoints if subscribed(e, env)]
    if not wanted:
        return
    already = set(
        (
            await uow.session.scalars(
                select(Delivery.endpoint_id).where(
                    Delivery.event_id == env.id,
                    Delivery.endpoint_id.in_([e.id for e in wanted]),
                )
            )
        ).all()
    )
    now = deps.clock()
    payload = env.to_bytes()
    for endpoint in wanted:
        if endpoint.id in already:
            continue
        uow.session.add(Delivery(
            id=str(uuid4()), endpoint_id=endpoint.id, district_id=env.districtid,
            event_id=env.id, event_type=env.type, payload=payload, status=Status.pending,
            attempts=0, next_attempt_at=now, created_at=now))
    uow.after_commit.append(deps.dispatcher.wake)


# Every public event (contracts.asyncapi.public_events), each its own durable consumer.
HANDLERS = dict.fromkeys(public_events(), on_public_event)


def subscribed(endpoint: Endpoint, env: Envelope) -> bool:
    """An endpoint receives what happens after it is created (history: replay over NATS), of
    the types it asked for (all public types if none)."""
    if endpoint.event_types and env.type not in endpoint.event_types:
        return False
    return env.time >= endpoint.created_at
