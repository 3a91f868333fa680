"""The AsyncAPI document of the public channels, built by FastStream from the event models.

Only public events are in it: internal subjects carry personal data and are not the integrators'
(their JSON Schemas are under contracts/schemas/ for the services' own compatibility check).
The document is committed as contracts/asyncapi.json (``python -m contracts.schema --write``)
and served by the running system at ``GET /asyncapi.json`` (``asyncapi_route``).
"""

from functools import lru_cache
from typing import Any

from contracts.envelope import CONTENT_TYPE
from contracts.events import EVENTS, Event
from contracts.subjects import PUBLIC_ROOT

TITLE = "Ensemble integration events"
# The document's own version: raise the minor for new channels or versions, the major never
# (event versions live in each channel's CloudEvents type).
DOCUMENT_VERSION = "1.0.0"
DESCRIPTION = """\
Events Ensemble publishes for integrators, as CloudEvents 1.0 in structured JSON mode
(content type application/cloudevents+json) on NATS JetStream.

Subjects are `ensemble.{district}.<domain>.<event>`; an integrator's NATS user is limited to its
own district. Streams: ENSEMBLE_REFERRALS, ENSEMBLE_PARTNERS, ENSEMBLE_ENGAGEMENT,
ENSEMBLE_NOTIFICATIONS (about 400 days of history, replayable with a durable pull consumer).
The CloudEvents `type` carries the event's version (e.g. org.ensemble.referrals.opened.v1);
a breaking change publishes a new version. Extension attributes: districtid, schoolid,
correlationid (one referral's chain of events), causationid (the event that caused this one),
and when the deployment traces traceparent and tracestate (CloudEvents distributed tracing, W3C
Trace Context). The CloudEvents `subject` is the referral (data.referral_id) whenever the event
belongs to one, else the family, outreach, family event, batch or partner service it is about.
Events carry ids, categories and times, never names, contact details or notes.
The same events are available as signed webhooks (see /api/v1/webhooks/endpoints)."""


def public_events() -> list[type[Event]]:
    return [cls for _, cls in sorted(EVENTS.items()) if not cls.internal]


def channel_address(cls: type[Event]) -> str:
    return f"{PUBLIC_ROOT}.{{district}}.{cls.domain}.{cls.name}"


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    # Imported here: building the document is the only part of contracts that needs FastStream.
    from faststream.nats import NatsBroker
    from faststream.specification import AsyncAPI

    from contracts.envelope import envelope_model

    broker = NatsBroker(
        "nats://nats:4222",
        specification_url="nats://nats:4222",
        description="The deployment's NATS cluster; integrators get a per-district user.",
    )
    for cls in public_events():
        broker.publisher(
            channel_address(cls),
            schema=envelope_model(cls),
            title=cls.ce_type(),
            description=envelope_model(cls).__doc__,
            include_in_schema=True,
        )
    spec = AsyncAPI(broker, title=TITLE, version=DOCUMENT_VERSION, description=DESCRIPTION,
                    schema_version="3.0.0")
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    return _fit_to_cloudevents(document)


def _fit_to_cloudevents(document: dict[str, Any]) -> dict[str, Any]:
    """FastStream assumes its own message format; ours is a CloudEvents envelope."""
    document["defaultContentType"] = CONTENT_TYPE
    # FastStream names the one server "development"; it is whatever cluster serves the deployment.
    document["servers"] = {"ensemble": next(iter(document.get("servers", {}).values()))}
    for name, message in document.get("components", {}).get("messages", {}).items():
        message["contentType"] = CONTENT_TYPE
        message["correlationId"] = {
            "description": "the referral's chain of events",
            "location": "$message.payload#/correlationid",
        }
        message["name"] = message["title"] = name.removesuffix(":Message")
    for channel in document.get("channels", {}).values():
        channel["servers"] = [{"$ref": "#/servers/ensemble"}]
        channel["parameters"] = {
            "district": {"description": "the district id; an integrator sees only its own"}
        }
    return document


def asyncapi_document() -> dict[str, Any]:
    """A fresh copy of the document (callers may not mutate the cached one)."""
    import copy

    return copy.deepcopy(_document())


async def asyncapi_route() -> Any:
    """``GET /asyncapi.json``: mount with ``app.get("/asyncapi.json", tags=["contract"])``."""
    from fastapi.responses import JSONResponse

    return JSONResponse(_document())
