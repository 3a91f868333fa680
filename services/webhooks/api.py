"""Webhook endpoints, their dead letters and replay over HTTP (district admins and integrators).

Every route is a module-level function on ``router``; each takes what the service was built
with (``WebhooksDeps``: its runtime, settings, dispatcher and clock) through ``Wired``. The
request and response models are in schemas.py."""

import json
import secrets
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy import delete, func, select

from runtime.auth import Policy, Role, caller
from runtime.errors import NotFound
from runtime.idempotency import REPLAYED, IdempotencyKey, create_once, keyed_id
from services.webhooks.deps import Wired
from services.webhooks.destinations import refused_host
from services.webhooks.lifecycle import Replay, Status, decide
from services.webhooks.schemas import (
    CreatedEndpoint,
    CreateEndpoint,
    DeadLetterView,
    EndpointDetail,
    EndpointView,
    Replayed,
    Token,
)
from services.webhooks.tables import DeadLetter, Delivery, Endpoint

MANAGERS = frozenset({Role.district_admin, Role.integrator})
ROUTES = [
    ("POST", "/webhooks/endpoints"),
    ("GET", "/webhooks/endpoints"),
    ("GET", "/webhooks/endpoints/{endpoint_id}"),
    ("DELETE", "/webhooks/endpoints/{endpoint_id}"),
    ("GET", "/webhooks/endpoints/{endpoint_id}/dead-letters"),
    ("POST", "/webhooks/endpoints/{endpoint_id}/dead-letters/{dead_letter_id}/replay"),
]
POLICY = Policy(rules={route: MANAGERS for route in ROUTES})

router = APIRouter()


def district_of(request: Request, named: str) -> str:
    """The one place this router decides the district: the caller's, which the authorizer has
    already checked against the one the request names."""
    principal = getattr(request.state, "principal", None)
    return principal.district if principal is not None else named


async def _endpoint(session: Any, district: str, endpoint_id: str) -> Endpoint:
    endpoint = await session.get(Endpoint, endpoint_id)
    if endpoint is None or endpoint.district_id != district:
        raise NotFound(f"webhook endpoint {endpoint_id} not found")
    return endpoint


@router.post("/webhooks/endpoints", status_code=201, response_model=CreatedEndpoint,
             responses=REPLAYED)
async def create(deps: Wired, body: CreateEndpoint, request: Request, response: Response,
                 idempotency_key: IdempotencyKey = None) -> CreatedEndpoint:
    """With an Idempotency-Key, a retry answers the endpoint it registered (200), its secret
    included: the same answer to the same caller's same request."""
    district = district_of(request, body.district_id)
    if deps.runtime.districts.get(district) is None:
        raise NotFound(f"district {district} not found")
    if deps.config.webhooks_require_https and not body.url.startswith("https://"):
        raise _invalid_url("this deployment delivers to https URLs only")
    refused = None if deps.config.webhooks_allow_private else refused_host(
        urlsplit(body.url).hostname or "")
    if refused:
        raise _invalid_url(f"{refused}: webhooks are delivered to public addresses only")
    endpoint_id = keyed_id("webhook-endpoint", district, caller(request, "anonymous"),
                           idempotency_key)

    def created(endpoint: Endpoint) -> CreatedEndpoint:
        return CreatedEndpoint(**EndpointView.of(endpoint).model_dump(), secret=endpoint.secret)

    async def find() -> CreatedEndpoint | None:
        async with deps.runtime.unit_of_work() as uow:
            earlier = await uow.session.get(Endpoint, endpoint_id)
        return None if earlier is None else created(earlier)

    async def create() -> CreatedEndpoint:
        endpoint = Endpoint(id=endpoint_id, district_id=district, url=body.url,
                            secret=body.secret or f"whsec_{secrets.token_urlsafe(32)}",
                            event_types=body.event_types, description=body.description,
                            created_at=deps.clock())
        async with deps.runtime.unit_of_work() as uow:
            uow.session.add(endpoint)
        return created(endpoint)

    return await create_once(idempotency_key, find, create, response)


@router.get("/webhooks/endpoints", response_model=list[EndpointView])
async def list_(deps: Wired, request: Request, district_id: Token) -> list[EndpointView]:
    district = district_of(request, district_id)
    async with deps.runtime.unit_of_work() as uow:
        rows = (await uow.session.scalars(
            select(Endpoint).where(Endpoint.district_id == district)
            .order_by(Endpoint.created_at, Endpoint.id))).all()
    return [EndpointView.of(e) for e in rows]


@router.get("/webhooks/endpoints/{endpoint_id}", response_model=EndpointDetail)
async def detail(deps: Wired, endpoint_id: str, request: Request,
                 district_id: Token) -> EndpointDetail:
    district = district_of(request, district_id)
    async with deps.runtime.unit_of_work() as uow:
        endpoint = await _endpoint(uow.session, district, endpoint_id)
        counts = {status: n for status, n in (await uow.session.execute(
            select(Delivery.status, func.count()).where(Delivery.endpoint_id == endpoint_id)
            .group_by(Delivery.status))).all()}
    return EndpointDetail(**EndpointView.of(endpoint).model_dump(),
                          pending=counts.get(Status.pending, 0),
                          delivered=counts.get(Status.delivered, 0),
                          dead=counts.get(Status.dead, 0))


@router.delete("/webhooks/endpoints/{endpoint_id}", status_code=204)
async def remove(deps: Wired, endpoint_id: str, request: Request, district_id: Token
                 ) -> Response:
    district = district_of(request, district_id)
    async with deps.runtime.unit_of_work() as uow:
        endpoint = await _endpoint(uow.session, district, endpoint_id)
        for table in (DeadLetter, Delivery):
            await uow.session.execute(delete(table).where(table.endpoint_id == endpoint.id))
        await uow.session.delete(endpoint)
    return Response(status_code=204)


@router.get("/webhooks/endpoints/{endpoint_id}/dead-letters",
            response_model=list[DeadLetterView])
async def dead_letters(deps: Wired, endpoint_id: str, request: Request, district_id: Token,
                       limit: Annotated[int, Query(ge=1, le=500)] = 100,
                       offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
                       ) -> list[DeadLetterView]:
    district = district_of(request, district_id)
    async with deps.runtime.unit_of_work() as uow:
        await _endpoint(uow.session, district, endpoint_id)
        rows = (await uow.session.execute(
            select(DeadLetter, Delivery.payload)
            .join(Delivery, Delivery.id == DeadLetter.delivery_id)
            .where(DeadLetter.endpoint_id == endpoint_id)
            .order_by(DeadLetter.dead_at, DeadLetter.id)
            .limit(min(max(limit, 1), 500)).offset(max(offset, 0)))).all()
    return [DeadLetterView(id=d.id, endpoint_id=d.endpoint_id, delivery_id=d.delivery_id,
                           event_id=d.event_id, event_type=d.event_type,
                           attempts=d.attempts, last_status=d.last_status,
                           last_error=d.last_error, dead_at=d.dead_at,
                           event=json.loads(payload)) for d, payload in rows]


@router.post("/webhooks/endpoints/{endpoint_id}/dead-letters/{dead_letter_id}/replay",
             status_code=202, response_model=Replayed)
async def replay(deps: Wired, endpoint_id: str, dead_letter_id: str, request: Request,
                 district_id: Token | None = None) -> Replayed:
    district = district_of(request, district_id or "")
    async with deps.runtime.unit_of_work() as uow:
        await _endpoint(uow.session, district, endpoint_id)
        letter = await uow.session.get(DeadLetter, dead_letter_id)
        if letter is None or letter.endpoint_id != endpoint_id:
            raise NotFound(f"dead letter {dead_letter_id} not found")
        delivery = await uow.session.get(Delivery, letter.delivery_id)
        assert delivery is not None
        # The same delivery id again: a receiver that did process it can still dedupe.
        status = decide(Status(delivery.status), Replay())  # dead -> pending
        delivery.status, delivery.attempts = status, 0
        delivery.next_attempt_at = deps.clock()
        await uow.session.delete(letter)
        uow.after_commit.append(deps.dispatcher.wake)
    return Replayed(delivery_id=delivery.id, status=status.value)


def _invalid_url(message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", "url"), "type": "value_error",
                                    "msg": message}])
