"""OpenTelemetry tracing: one referral is one trace, across HTTP, NATS, the outbox and restarts.

W3C trace context (``traceparent``, ``tracestate``) is read from incoming HTTP requests, written
into every event as the CloudEvents distributed-tracing extension (so it is stored with the
outbox row and survives the relay and restarts), and carried in NATS headers by the relay. A
consumer continues the trace of each event it handles; what a message row or a stored event
leads to later (a send, a delivery report, a reply, a webhook) continues the trace stored with
it.

Off by default: nothing is traced, nothing is added to events, until the standard variables ask
for an OTLP export (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
or ``OTEL_TRACES_EXPORTER=otlp``; ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``
keep it off). Span attributes hold ids, types, routes and outcomes, never a name, phone,
email, address or note (docs/privacy.md).
"""

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("ensemble.tracing")

FIELDS = ("traceparent", "tracestate")  # the W3C headers, and the CloudEvents extension names
_W3C = TraceContextTextMapPropagator()
_tracer: Tracer | None = None  # None: tracing is off
_provider: Any = None


def enabled() -> bool:
    return _tracer is not None


def wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the standard OTEL_* variables ask for traces to be exported over OTLP."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER")
    if exporters is not None:
        return "otlp" in [e.strip().lower() for e in exporters.split(",")]
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure_tracing(service: str, env: Mapping[str, str] = os.environ) -> bool:
    """Export spans over OTLP (HTTP/protobuf) when the environment asks for it; the exporter
    reads its endpoint, headers, timeout and compression from the standard variables, the
    resource its service name (default ``ensemble-<service>``) and attributes."""
    if enabled() or not wanted(env):
        return enabled()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol != "http/protobuf":
        log.warning("OTLP protocol %s is not supported here; exporting http/protobuf", protocol)
    named = service if service.startswith("ensemble") else f"ensemble-{service}"
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or named})
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=_endpoint(env))))
    use_provider(provider)
    log.info("tracing on: spans exported over OTLP as %s",
             resource.attributes.get(SERVICE_NAME))
    return True


def _endpoint(env: Mapping[str, str]) -> str | None:
    """Where spans go, as the OTLP exporter specification reads the variables (None: the
    exporter's default, http://localhost:4318/v1/traces)."""
    if traces := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return traces
    if base := env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return base.rstrip("/") + "/v1/traces"
    return None


def use_provider(provider: Any) -> None:
    """Trace with this SDK TracerProvider (``configure_tracing``, or a test's in-memory one);
    None turns tracing off again."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("ensemble") if provider is not None else None


def shutdown() -> None:
    """Flush the spans not yet exported (at the end of a process)."""
    if _provider is not None:
        _provider.shutdown()


# --- context in and out ------------------------------------------------------------------------


def context_from(carrier: Mapping[str, Any] | None) -> Context | None:
    """The trace context a carrier (HTTP or NATS headers, an envelope's extensions, a stored
    row) holds, or None."""
    if not carrier or not carrier.get("traceparent"):
        return None
    found = {k: str(carrier[k]) for k in FIELDS if carrier.get(k)}
    context = _W3C.extract(found)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def current_fields() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the span in hand; empty when there is none."""
    if not enabled():
        return {}
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


def payload_context(payload: bytes) -> Context | None:
    """The trace context a stored CloudEvent (outbox row, webhook delivery) carries."""
    if not enabled() or b'"traceparent"' not in payload:
        return None
    try:
        envelope = json.loads(payload)
    except ValueError:
        return None
    return context_from(envelope) if isinstance(envelope, dict) else None


# --- spans ---------------------------------------------------------------------------------------


@contextmanager
def span(name: str, *, parent: Context | None = None, kind: SpanKind = SpanKind.INTERNAL,
         links: list[Link] | None = None, attributes: Mapping[str, Any] | None = None,
         ) -> Iterator[Span]:
    """A span (the current one inside the block), child of ``parent`` when given, else of the
    current span. Attributes must never hold personal data. Off: nothing is made."""
    if _tracer is None:
        yield INVALID_SPAN
        return
    # Exceptions are not recorded as OpenTelemetry would (their message may quote SQL
    # parameters or an address): the span says which kind of error, no more.
    with _tracer.start_as_current_span(name, context=parent, kind=kind, links=links,
                                       attributes=dict(attributes or {}),
                                       record_exception=False,
                                       set_status_on_exception=False) as made:
        try:
            yield made
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                made.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                made.set_attribute("error.type", type(exc).__name__)
            raise


@contextmanager
def continued(name: str, stored: Mapping[str, Any] | None, *,
              kind: SpanKind = SpanKind.INTERNAL,
              attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """A span in the trace stored with a row or an event (``stored`` holds its traceparent),
    linked to the span in hand (e.g. the provider's webhook request that brought the report);
    without a stored trace, a child of the span in hand."""
    if _tracer is None:
        yield INVALID_SPAN
        return
    parent = context_from(stored)
    here = trace.get_current_span().get_span_context()
    links = [Link(here)] if parent is not None and here.is_valid else None
    with span(name, parent=parent, kind=kind, links=links, attributes=attributes) as made:
        yield made


def ids() -> tuple[str, str] | None:
    """The current trace and span ids (hex), for logs; None outside a span."""
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return format(found.trace_id, "032x"), format(found.span_id, "016x")


# --- database spans ------------------------------------------------------------------------------


class _ChildSpansOnly:
    """The SQLAlchemy instrumentation's tracer: a statement gets a span only inside a traced
    request, event or send, so timers polling their tables do not each make a trace."""

    def start_span(self, name: str, context: Context | None = None, *args: Any,
                   **kwargs: Any) -> Span:
        if _tracer is None or not trace.get_current_span(context).get_span_context().is_valid:
            return INVALID_SPAN
        return _StatementSpan(_tracer.start_span(name, context, *args, **kwargs))


class _StatementSpan(Span):
    """A statement's span whose error status names no more than the kind of error: the
    driver's message may quote the values (PostgreSQL's "Key (email)=(...) already exists")."""

    def __init__(self, inner: Span) -> None:
        self._inner = inner

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        code = status.status_code if isinstance(status, Status) else status
        self._inner.set_status(Status(code))

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        self._inner.set_attribute("error.type", type(exception).__name__)

    def end(self, end_time: int | None = None) -> None:
        self._inner.end(end_time)

    def get_span_context(self) -> trace.SpanContext:
        return self._inner.get_span_context()

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self._inner.set_attributes(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self._inner.set_attribute(key, value)

    def add_event(self, name: str, *args: Any, **kwargs: Any) -> None:
        self._inner.add_event(name, *args, **kwargs)

    def update_name(self, name: str) -> None:
        self._inner.update_name(name)

    def is_recording(self) -> bool:
        return self._inner.is_recording()


def instrument_engine(engine: Any) -> None:
    """Database spans from opentelemetry-instrumentation-sqlalchemy for this (sync) engine:
    the statement with its placeholders, never the parameters."""
    if not enabled():
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    usage = get_meter("ensemble.sqlalchemy").create_up_down_counter(
        "db.client.connections.usage", unit="connections")
    EngineTracer(_ChildSpansOnly(), engine, usage)


# --- messaging -----------------------------------------------------------------------------------


@contextmanager
def producing(destination: str, message_id: str, event_type: str, payload: bytes,
              headers: dict[str, str]) -> Iterator[None]:
    """The outbox relay's publish of one stored event: a producer span in the event's trace,
    its context added to the NATS headers (the event keeps the context it was emitted in)."""
    if _tracer is None:
        yield
        return
    with span(f"publish {event_type}", parent=payload_context(payload), kind=SpanKind.PRODUCER,
              attributes={"messaging.system": "nats", "messaging.operation.type": "send",
                          "messaging.destination.name": destination,
                          "messaging.message.id": message_id,
                          "cloudevents.event_type": event_type}):
        headers.update(current_fields())
        yield


@contextmanager
def consuming_batch(consumer: str, count: int) -> Iterator[Span]:
    """A consumer's batch: its own trace (it holds many referrals' events), each handled
    event's span linked to it."""
    with span(f"consume {consumer}", kind=SpanKind.CONSUMER,
              attributes={"messaging.system": "nats", "messaging.operation.type": "process",
                          "messaging.consumer.group.name": consumer,
                          "messaging.batch.message_count": count}) as made:
        yield made


@contextmanager
def handling(consumer: str, event_type: str, event_id: str, headers: Mapping[str, str] | None,
             extensions: Mapping[str, Any] | None) -> Iterator[None]:
    """One event handled: a child of the publish that carried it (NATS headers), else of the
    span that emitted it (the event's own traceparent), linked to the batch in hand."""
    if _tracer is None:
        yield
        return
    parent = context_from(headers) or context_from(extensions)
    here = trace.get_current_span().get_span_context()
    with span(f"handle {event_type}", parent=parent, kind=SpanKind.CONSUMER,
              links=[Link(here)] if here.is_valid else None,
              attributes={"messaging.system": "nats", "messaging.operation.type": "process",
                          "messaging.consumer.group.name": consumer,
                          "messaging.message.id": event_id,
                          "cloudevents.event_id": event_id,
                          "cloudevents.event_type": event_type}):
        yield


def name_request(service: str, route: str, method: str, status: int) -> None:
    """Name the HTTP server span in hand by its route template, with the answer's status."""
    if _tracer is None:
        return
    made = trace.get_current_span()
    made.update_name(f"{method} {route}")
    made.set_attributes({"http.route": route, "http.response.status_code": status,
                         "ensemble.service": service})
    if status >= 500:
        made.set_status(Status(StatusCode.ERROR))
