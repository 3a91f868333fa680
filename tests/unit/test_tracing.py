"""runtime/tracing.py without a network: when tracing is on (only the standard OTEL_* variables
turn it on), what an event and a log line carry, how a stored event's trace is continued by the
relay after a restart, and that no span says more than the kind of an error."""

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from sqlalchemy import Column, MetaData, String, Table, create_engine, insert
from sqlalchemy.exc import IntegrityError

from contracts.envelope import decode_envelope
from contracts.events import FamilyRegistered
from runtime import tracing
from runtime.logs import JsonFormatter
from runtime.uow import UnitOfWork

STORED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, False),
    ({"OTEL_TRACES_EXPORTER": "console"}, False),
])
def test_only_the_standard_variables_turn_the_export_on(env: dict[str, str], on: bool) -> None:
    assert tracing.wanted(env) is on


def test_off_by_default_nothing_is_traced_and_events_carry_nothing() -> None:
    assert not tracing.enabled()
    with tracing.span("nothing") as made:
        assert not made.is_recording()
    uow = UnitOfWork(session=None, source="/ensemble/test")  # type: ignore[arg-type]
    envelope = uow.emit(FamilyRegistered(family_id="f1", school_id="s1", preferred_language="en"),
                        district="d001")
    assert "traceparent" not in json.loads(envelope.to_bytes())


def test_an_event_carries_the_emitting_spans_context_as_its_cloudevents_extension(
        spans: InMemorySpanExporter) -> None:
    uow = UnitOfWork(session=None, source="/ensemble/test")  # type: ignore[arg-type]
    with tracing.span("work") as made:
        envelope = uow.emit(FamilyRegistered(family_id="f1", school_id="s1",
                                             preferred_language="en"), district="d001")
    context = made.get_span_context()
    stored = json.loads(envelope.to_bytes())
    assert stored["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    decoded, _ = decode_envelope(envelope.to_bytes())  # a consumer reads it back
    assert (decoded.model_extra or {})["traceparent"] == stored["traceparent"]


def test_the_relay_continues_a_stored_events_trace_and_puts_it_in_the_nats_headers(
        spans: InMemorySpanExporter) -> None:
    """What a relay reads after a restart is the row's payload: the trace is in it."""
    payload = json.dumps({"id": "e1", "traceparent": STORED, "tracestate": "k=v"}).encode()
    headers = {"Nats-Msg-Id": "e1"}
    with tracing.producing("ensemble.d001.referrals.opened", "e1",
                           "org.ensemble.referrals.opened.v1", payload, headers):
        pass
    [published] = spans.get_finished_spans()
    assert f"{published.context.trace_id:032x}" == STORED.split("-")[1]
    assert f"{published.parent.span_id:016x}" == STORED.split("-")[2]  # type: ignore[union-attr]
    assert headers["traceparent"].split("-")[1] == STORED.split("-")[1]
    assert headers["tracestate"] == "k=v"

    # The consumer: a child of the publish (NATS headers), linked to its batch.
    with tracing.consuming_batch("partners-referrals-opened", 1), tracing.handling(
            "partners-referrals-opened", "org.ensemble.referrals.opened.v1", "e1", headers,
            {"traceparent": STORED}):
        pass
    handled = next(s for s in spans.get_finished_spans() if s.name.startswith("handle"))
    assert handled.parent.span_id == published.context.span_id  # type: ignore[union-attr]
    assert handled.links and handled.links[0].context.trace_id != handled.context.trace_id


def test_log_lines_carry_the_trace_and_span_ids(spans: InMemorySpanExporter) -> None:
    record = logging.LogRecord("ensemble.test", logging.INFO, __file__, 1, "sent %s",
                               ("n1",), None)
    assert "trace_id" not in json.loads(JsonFormatter().format(record))
    with tracing.span("work") as made:
        line = json.loads(JsonFormatter().format(record))
    context = made.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


def test_errors_are_named_by_kind_never_by_their_message(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError), tracing.span("work"):
        raise ValueError("maria@example.org is not allowed")
    # A database statement's span, as the SQLAlchemy instrumentation reports a failure.
    engine = create_engine("sqlite://")
    tracing.instrument_engine(engine)
    table = Table("families", MetaData(), Column("email", String, primary_key=True))
    table.metadata.create_all(engine)
    with tracing.span("request"), engine.begin() as conn:
        conn.execute(insert(table), {"email": "maria@example.org"})
        with pytest.raises(IntegrityError):
            conn.execute(insert(table), {"email": "maria@example.org"})
    statement = tracing._StatementSpan(tracing.INVALID_SPAN)
    statement.set_status(Status(StatusCode.ERROR, "Key (email)=(maria@example.org)"))
    finished = spans.get_finished_spans()
    assert any(s.attributes.get("db.system") or s.attributes.get("db.system.name")
               for s in finished)
    assert any(s.status.status_code == StatusCode.ERROR for s in finished if s.name != "work")
    for span in finished:
        text = json.dumps([span.name, dict(span.attributes or {}), span.status.description,
                           [dict(e.attributes or {}) for e in span.events]], default=str)
        assert "maria" not in text, span.name
