"""What a district watches of outreach."""

from prometheus_client import Counter

NOTIFICATIONS = Counter(
    "ensemble_notifications", "Messages by channel and result", ["channel", "result"]
)
OPT_OUTS = Counter("ensemble_opt_outs", "Families opting out, by channel", ["channel"])
