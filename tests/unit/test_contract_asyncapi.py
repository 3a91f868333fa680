"""The AsyncAPI document: every public channel, no internal one, each message's payload the
event's envelope, and the route that serves it."""

import json

import httpx
from fastapi import FastAPI

from contracts.asyncapi import asyncapi_document, asyncapi_route
from contracts.events import EVENTS
from contracts.schema import ASYNCAPI_FILE


def resolve(document: dict, ref: str) -> dict:
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_one_channel_per_public_event_and_none_internal() -> None:
    document = asyncapi_document()
    assert document["asyncapi"] == "3.0.0"
    assert document["defaultContentType"] == "application/cloudevents+json"
    public = {t: cls for t, cls in EVENTS.items() if not cls.internal}
    assert set(document["channels"]) == set(public)
    for ce_type, cls in public.items():
        channel = document["channels"][ce_type]
        assert channel["address"] == f"ensemble.{{district}}.{cls.domain}.{cls.name}"
        assert "district" in channel["parameters"]
        message = resolve(document, channel["messages"]["Message"]["$ref"])
        assert message["contentType"] == "application/cloudevents+json"
        envelope = resolve(document, message["payload"]["$ref"])
        assert envelope["properties"]["type"]["const"] == ce_type
        data = resolve(document, envelope["properties"]["data"]["$ref"])
        assert set(data["properties"]) == set(cls.model_fields)
        operation = document["operations"][ce_type]
        assert operation["action"] == "send"
    text = json.dumps(document)
    assert "ensemble_internal" not in text
    assert "OutreachRequested" not in text


async def test_route_serves_the_committed_document() -> None:
    app = FastAPI()
    app.get("/asyncapi.json", tags=["contract"])(asyncapi_route)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/asyncapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == json.loads(ASYNCAPI_FILE.read_text())
