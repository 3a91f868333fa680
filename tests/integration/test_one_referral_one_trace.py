"""One referral is one trace (issue 21): from `POST /referrals` (whose W3C traceparent the
service continues) through every service over a real NATS server to NotificationSent, the
family's emailed reply and the FamilyContacted it leads to, and the integrator's webhook
deliveries. Spans are kept in memory (the SDK's in-memory exporter) instead of exported over
OTLP; the five services run in this process over real HTTP, NATS JetStream, database and SMTP,
the webhook receiver is a real HTTP server. No span holds the family's personal data."""

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import nats
import pytest
from conftest import Inbox, System, running, token
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.receiver import Receiver, Route, serve

from ensemble.embedded import DevSmsServer
from ensemble.system import build_services
from runtime import tracing
from runtime.settings import SERVICES, Settings
from services.webhooks.service import build as build_webhooks
from services.webhooks.settings import webhooks_settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"  # the caller's span (a gateway, a SIS)
FAMILY = {"name": "Maria Garcia", "email": "maria.garcia.trace@example.org",
          "phone": "+14155550142"}
REPLY = "Sí, gracias, los martes"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, in memory, before the services are built (their engines get database
    spans only then)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)
        provider.shutdown()


@pytest.fixture
async def five(spans: InMemorySpanExporter, settings: Settings, smtp: tuple[Inbox, str]
               ) -> AsyncIterator[tuple[System, Route]]:
    """The five services in this process (built once tracing is on), an integrator's webhook
    endpoint on a real receiver."""
    others = tuple(name for name in SERVICES if name != "webhooks")
    hooks = webhooks_settings(settings, webhooks_allow_private=True,  # the receiver: loopback
                              webhooks_poll_seconds=0.1)
    services = [*build_services(settings, others), build_webhooks(hooks)]
    sms_store = settings.data_dir / "sms" / "messages.jsonl"
    sms_port = int(str(settings.sms_api_url).rsplit(":", 1)[1])
    receiver = Receiver()
    admin = {"Authorization": f"Bearer {token(settings, 'district_admin', 'd001')}"}
    integrator = {"Authorization": f"Bearer {token(settings, 'integrator', 'd001')}"}
    async with DevSmsServer(sms_store, sms_port, settings.sms_auth_token, None), \
            serve(receiver.app) as receiver_url, running(settings, services) as url, \
            httpx.AsyncClient(base_url=url, timeout=10, headers=admin) as http:
        route = receiver.routes["trace"] = Route(secret="whsec_trace_test_secret_0123456789")
        endpoint = await http.post("/api/v1/webhooks/endpoints", headers=integrator, json={
            "district_id": "d001", "url": f"{receiver_url}/hooks/trace",
            "secret": route.secret, "event_types": []})
        assert endpoint.status_code == 201, endpoint.text
        yield System(settings, http, {s.name: s for s in services}, smtp[0], sms_store), route


def in_trace(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans()
            if s.context is not None and format(s.context.trace_id, "032x") == TRACE_ID]


async def referral_events(nats_url: str, referral_id: str) -> list[tuple[dict[str, Any],
                                                                         dict[str, str]]]:
    """Every envelope about the referral on the streams, with its NATS headers."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        found = []
        for stream in ("ENSEMBLE_REFERRALS", "ENSEMBLE_PARTNERS", "ENSEMBLE_ENGAGEMENT",
                       "ENSEMBLE_NOTIFICATIONS", "ENSEMBLE_INTERNAL"):
            state = (await js.stream_info(stream)).state
            for seq in range(max(1, state.first_seq), state.last_seq + 1 if state.messages
                             else 1):
                msg = await js.get_msg(stream, seq)
                envelope = json.loads(msg.data or b"{}")
                if envelope["data"].get("referral_id") == referral_id:
                    found.append((envelope, dict(msg.headers or {})))
        return found
    finally:
        await nc.close()


async def test_one_referral_is_one_trace_across_every_service(
        spans: InMemorySpanExporter, five: tuple[System, Route]) -> None:
    system, route = five
    await system.register_partner()
    family = await system.register_family(name=FAMILY["name"], email=FAMILY["email"],
                                          phone=FAMILY["phone"])
    body = {"district_id": "d001", "school_id": "lincoln-es", "student_ref": "stu-trace-1",
            "family_id": family["id"], "need": "dental", "urgency": "routine",
            "consent": "given"}
    opened = await system.http.post("/api/v1/referrals", json=body,
                                     headers={"traceparent": CALLER, "tracestate": "ens=1"})
    assert opened.status_code == 201, opened.text
    referral_id = opened.json()["id"]

    [email] = await system.eventually(_emailed(system), what="the family's email")
    reply = await system.http.post("/api/v1/email/inbound", json={  # no traceparent
        "to": email["Reply-To"], "from": FAMILY["email"], "text": REPLY})
    assert reply.status_code == 200, reply.text
    await system.wait_status(referral_id, "family_contacted", timeout=30)

    def names() -> set[str]:
        return {s.name for s in in_trace(spans)}

    contacted = "handle org.ensemble.engagement.family_contacted.v1"
    await system.eventually(lambda: _value(contacted in names() or None), 30,
                            "referrals handling FamilyContacted, in the trace")
    trace = in_trace(spans)
    seen = names()

    # The request, each hop through NATS, the send, the reply, the contact: one trace.
    for name in ("POST /api/v1/referrals",
                 "publish org.ensemble.referrals.opened.v1",
                 "handle org.ensemble.referrals.opened.v1",
                 "publish org.ensemble.partners.matched.v1",
                 "handle org.ensemble.partners.matched.v1",
                 "publish org.ensemble.engagement.outreach_requested.v1",
                 "handle org.ensemble.engagement.outreach_requested.v1",
                 "email send", "record NotificationSent",
                 "publish org.ensemble.notifications.sent.v1",
                 "handle org.ensemble.notifications.sent.v1",
                 "record FamilyReplied",
                 "handle org.ensemble.notifications.family_replied.v1",
                 "publish org.ensemble.engagement.family_contacted.v1", contacted):
        assert name in seen, (name, sorted(seen))
    consumers = {str(s.attributes.get("messaging.consumer.group.name")).split("-")[0]
                 for s in trace if s.name.startswith("handle ")}
    assert {"partners", "engagement", "notifications", "referrals", "webhooks"} <= consumers
    [server] = [s for s in trace if s.name == "POST /api/v1/referrals"]
    assert server.parent is not None  # the caller's span, from its traceparent
    assert format(server.parent.span_id, "016x") == CALLER.split("-")[2]
    assert any(s.attributes.get("db.system") or s.attributes.get("db.system.name")
               for s in trace), "database spans from the SQLAlchemy instrumentation"

    # The reply came in as its own request; the spans it led to stay in the referral's trace,
    # linked to that request.
    [recorded] = [s for s in trace if s.name == "record FamilyReplied"]
    assert recorded.links and format(recorded.links[0].context.trace_id, "032x") != TRACE_ID

    # Every event of the referral carries the trace (CloudEvents extension) and so does its
    # NATS message (headers), each in the same trace.
    events = await referral_events(system.settings.nats_url, referral_id)
    assert {e["type"].split(".")[3] for e, _ in events} >= {
        "opened", "matched", "outreach_requested", "sent", "family_replied", "family_contacted"}
    for envelope, headers in events:
        assert envelope["traceparent"].split("-")[1] == TRACE_ID, envelope["type"]
        assert headers["traceparent"].split("-")[1] == TRACE_ID, envelope["type"]
    assert any(e.get("tracestate") == "ens=1" for e, _ in events)

    # The integrator's endpoint gets each of the referral's public events as a delivery in
    # the trace, with the delivery span's context as traceparent.
    async def delivered() -> set[str] | None:
        got = {json.loads(r["body"])["type"] for r in route.requests
               if json.loads(r["body"])["data"].get("referral_id") == referral_id}
        return got if "org.ensemble.engagement.family_contacted.v1" in got else None

    await system.eventually(delivered, 30, "FamilyContacted at the webhook")
    for request in route.requests:
        if json.loads(request["body"])["data"].get("referral_id") == referral_id:
            assert request["headers"]["traceparent"].split("-")[1] == TRACE_ID
    assert "webhook org.ensemble.referrals.opened.v1" in names()

    # No personal data in any span, in this trace or another.
    for span in spans.get_finished_spans():
        text = json.dumps({"name": span.name, "attributes": dict(span.attributes or {}),
                           "status": span.status.description,
                           "events": [dict(e.attributes or {}) for e in span.events]},
                          default=str, ensure_ascii=False)
        for secret in (*FAMILY.values(), REPLY, "Maria", "Garcia"):
            assert secret not in text, (span.name, secret)


def _emailed(system: System) -> Any:
    async def probe() -> Any:
        return system.inbox.to(FAMILY["email"]) or None

    return probe


async def _value(value: Any) -> Any:
    return value


def test_spans_reach_an_otlp_http_collector_named_by_the_standard_variables() -> None:
    """`configure_tracing` as a service process runs it: OTEL_EXPORTER_OTLP_ENDPOINT names a
    collector (here a real HTTP server on loopback), spans arrive there as OTLP/protobuf with
    the service's name."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
    try:
        assert not tracing.configure_tracing("referrals", {})  # nothing asked: off
        assert tracing.configure_tracing("referrals", env)
        with tracing.span("POST /referrals"):
            pass
        tracing.shutdown()  # flushes, as a stopping process does
    finally:
        tracing.use_provider(None)
        server.shutdown()
    [(path, body)] = received
    assert path == "/v1/traces"
    request = ExportTraceServiceRequest.FromString(body)
    [resource] = request.resource_spans
    names = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert names["service.name"] == "ensemble-referrals"
    assert [s.name for scope in resource.scope_spans for s in scope.spans] == ["POST /referrals"]
