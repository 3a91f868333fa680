"""Webhook delivery metrics. Labels are bounded: no endpoint ids or URLs."""

from prometheus_client import Counter, Gauge

DELIVERIES = Counter(
    "ensemble_webhook_deliveries",
    "Webhook delivery attempts by result (delivered, retried, dead_lettered)",
    ["service", "result"],
)
BACKLOG = Gauge("ensemble_webhook_backlog", "Webhook deliveries waiting to be sent", ["service"])
