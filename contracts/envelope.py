"""The CloudEvents 1.0 envelope (structured JSON mode) every message travels in.

Extension attributes (lower-case alphanumerics, as CloudEvents requires): ``districtid``,
``schoolid``, ``correlationid`` (the referral's chain of events), ``causationid`` (the event
that caused this one). When tracing is on, the CloudEvents distributed-tracing extension:
``traceparent`` and ``tracestate`` (W3C trace context of the span that emitted the event).
"""

import json
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from contracts.events import Event, Instant, event_class
from contracts.subjects import check_token

CONTENT_TYPE = "application/cloudevents+json"


class EnvelopeError(ValueError):
    """A message that can never be handled: not JSON, not an envelope, unknown type or version."""


class Envelope(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=128)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    time: Instant
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    districtid: str
    schoolid: str | None = None
    correlationid: str
    causationid: str | None = None
    data: dict[str, Any]

    @field_validator("districtid")
    @classmethod
    def _district_token(cls, value: str) -> str:
        return check_token(value)

    @classmethod
    def wrap(
        cls,
        event: Event,
        *,
        source: str,
        district: str,
        school: str | None,
        subject: str | None,
        cause: "Envelope | None" = None,
        correlation: str | None = None,
        causation: str | None = None,
        event_id: str | None = None,
        extensions: dict[str, str] | None = None,
    ) -> "Envelope":
        """Wrap an event; the chain's correlation id follows its cause unless given. The id is
        random unless given (a consumer derives it from the cause: runtime/uow.py).
        ``extensions``: further CloudEvents attributes (``traceparent``, ``tracestate``)."""
        event_id = event_id or str(uuid4())
        return cls(
            id=event_id,
            source=source,
            type=event.ce_type(),
            time=datetime.now(UTC),
            subject=subject,
            districtid=district,
            schoolid=school,
            correlationid=correlation or (cause.correlationid if cause else event_id),
            causationid=causation or (cause.id if cause else None),
            data=event.model_dump(mode="json"),
            **(extensions or {}),
        )

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def contains_nul(value: Any) -> bool:
    """Whether parsed JSON holds U+0000 anywhere: PostgreSQL stores no text with it."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    return False


def decode_envelope(raw: bytes) -> tuple[Envelope, Event]:
    """Parse and validate a message; raise EnvelopeError with the reason if it never can be.

    The envelope is parsed and validated in one pass by pydantic's own JSON parser (about
    half the cost of ``json.loads`` then validating the objects); a message that fails it, or
    may hold a NUL, takes the step-by-step path, which names what is wrong."""
    if b"\\u0000" not in raw and b"\x00" not in raw:
        try:
            envelope = Envelope.model_validate_json(raw)
        except ValidationError:
            pass
        else:
            return envelope, _event(envelope)
    return _decode_in_steps(raw)


def _event(envelope: Envelope) -> Event:
    cls = event_class(envelope.type)
    if cls is None:
        raise EnvelopeError(f"unknown event type or version: {envelope.type!r}")
    try:
        return cls.model_validate(envelope.data)
    except ValidationError as exc:
        raise EnvelopeError(f"invalid {envelope.type} data: {_short(exc)}") from exc


def _decode_in_steps(raw: bytes) -> tuple[Envelope, Event]:
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError(f"not JSON: {exc}") from exc
    if b"\\u0000" in raw and contains_nul(payload):  # JSON carries U+0000 only escaped
        raise EnvelopeError("not storable: the JSON holds the NUL character (U+0000)")
    if not isinstance(payload, dict):
        raise EnvelopeError("not a CloudEvents envelope: the JSON is not an object")
    try:
        envelope = Envelope.model_validate(payload)
    except ValidationError as exc:
        raise EnvelopeError(f"invalid envelope: {_short(exc)}") from exc
    return envelope, _event(envelope)


def _short(exc: ValidationError) -> str:
    # Field locations and messages only: input values may hold personal data.
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
    )[:500]


_ENVELOPES: dict[type[Event], type[Envelope]] = {}


def envelope_model(cls: type[Event]) -> type[Envelope]:
    """The envelope as it travels for this event: CloudEvents attributes plus typed ``data``.

    ``specversion``, ``type`` and ``datacontenttype`` are always written, so they are required.
    """
    ce_type = cls.ce_type()
    if cls not in _ENVELOPES:
        _ENVELOPES[cls] = create_model(
            f"{cls.__name__}V{cls.version}Envelope",
            __base__=Envelope,
            __doc__=_describe(cls),
            specversion=(Literal["1.0"], ...),
            type=(Literal[ce_type], ...),  # type: ignore[valid-type]
            datacontenttype=(Literal["application/json"], ...),
            data=(cls, ...),
        )
    return _ENVELOPES[cls]


def _describe(cls: type[Event]) -> str:
    doc = (cls.__dict__.get("__doc__") or "").strip()
    where = "ensemble_internal" if cls.internal else "ensemble"
    subject = f"{where}.{{district}}.{cls.domain}.{cls.name}"
    return f"{doc}\n\nSubject: {subject}".strip() if doc else f"Subject: {subject}"
