"""The webhooks HTTP API's request and response models (the routes are in api.py)."""

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.asyncapi import public_events
from services.webhooks.tables import Endpoint

Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class CreateEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    district_id: Token
    url: str = Field(max_length=2048)
    secret: str | None = Field(default=None, min_length=16, max_length=256,
                               description="signs deliveries; generated and returned if absent")
    event_types: list[str] = Field(default_factory=list, max_length=100,
                                   description="CloudEvents types; empty for every public event")
    description: str | None = Field(default=None, max_length=200)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an http(s) URL with a host")
        if parts.username or parts.password:
            raise ValueError("no credentials in the URL; deliveries are signed")
        return value

    @field_validator("event_types")
    @classmethod
    def _public_types(cls, value: list[str]) -> list[str]:
        known = {c.ce_type() for c in public_events()}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"not public event types: {unknown}")
        return sorted(set(value))


class EndpointView(BaseModel):
    id: str
    district_id: str
    url: str
    event_types: list[str]
    description: str | None
    created_at: datetime

    @classmethod
    def of(cls, endpoint: Endpoint) -> "EndpointView":
        return EndpointView(id=endpoint.id, district_id=endpoint.district_id, url=endpoint.url,
                            event_types=list(endpoint.event_types),
                            description=endpoint.description, created_at=endpoint.created_at)


class EndpointDetail(EndpointView):
    pending: int
    delivered: int
    dead: int


class CreatedEndpoint(EndpointView):
    secret: str = Field(description="shown once (and to a retry with the same "
                        "Idempotency-Key): keep it to verify Ensemble-Signature")


class DeadLetterView(BaseModel):
    id: str
    endpoint_id: str
    delivery_id: str
    event_id: str
    event_type: str
    attempts: int
    last_status: int | None
    last_error: str | None
    dead_at: datetime
    event: dict[str, Any]


class Replayed(BaseModel):
    delivery_id: str
    status: str
