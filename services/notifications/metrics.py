"""What a district watches of outreach. Labels are bounded (channels, results, kinds)."""

from prometheus_client import Counter, Gauge

NOTIFICATIONS = Counter(
    "ensemble_notifications", "Messages by channel and result", ["channel", "result"]
)
OPT_OUTS = Counter("ensemble_opt_outs", "Families opting out, by channel", ["channel"])
BACKLOG = Gauge(
    "ensemble_notifications_backlog", "Messages queued or being sent, by kind", ["kind"]
)
BULK_QUEUED = Counter(
    "ensemble_notifications_bulk_queued", "Messages queued by bulk requests, by kind", ["kind"]
)
INBOUND = Counter(
    "ensemble_notifications_inbound", "Provider webhooks by kind and result", ["kind", "result"]
)
