"""Prometheus metrics every service shares. Labels are bounded: services, event types, results,
routes; never ids or personal data."""

from prometheus_client import Counter, Gauge, Histogram

CONSUMED = Counter(
    "ensemble_messages_consumed",
    "Messages taken from JetStream, by event type and result",
    ["service", "event", "result"],
)
PUBLISHED = Counter(
    "ensemble_messages_published", "Events published from the outbox", ["service", "event"]
)
HANDLER_SECONDS = Histogram(
    "ensemble_handler_seconds",
    "Time to apply one batch of messages in one transaction",
    ["service", "event"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DEAD_LETTERS = Counter(
    "ensemble_dead_letters", "Messages parked on the dead-letter stream", ["service", "event"]
)
REDELIVERIES = Counter(
    "ensemble_consumer_redeliveries",
    "Messages delivered more than once",
    ["service", "event"],
)
OUTBOX_BACKLOG = Gauge("ensemble_outbox_backlog", "Events not yet published", ["service"])
OUTBOX_OLDEST = Gauge(
    "ensemble_outbox_oldest_age_seconds", "Age of the oldest unpublished event", ["service"]
)
CONSUMER_PENDING = Gauge(
    "ensemble_consumer_pending",
    "Messages waiting in a durable consumer (lag)",
    ["service", "consumer"],
)
HTTP_REQUESTS = Counter(
    "ensemble_http_requests", "HTTP requests", ["service", "route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "ensemble_http_request_seconds", "HTTP request duration", ["service", "route", "method"]
)
REPLAYED = Counter(
    "ensemble_consumer_replayed",
    "Stream sequences a durable consumer went back over at start because its database was "
    "behind it (a restored backup); the inbox drops the events it already had",
    ["service", "consumer"],
)
RESTORE_UNEXPLAINED = Gauge(
    "ensemble_restore_unexplained_events",
    "Events this service published that its database no longer explains (not in its outbox): "
    "what a restore lost; `ensemble restore-report` lists them",
    ["service"],
)
RETENTION_REMOVED = Counter(
    "ensemble_retention_removed",
    "Records removed (or their personal fields blanked) by a daily retention job, by kind",
    ["service", "kind"],
)
