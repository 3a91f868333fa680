"""Partners' Prometheus series, all in one place. Labels are districts and results: bounded,
never ids. (What every service counts, messages, handlers, HTTP, is in runtime/metrics.py.)"""

from prometheus_client import Counter

MATCHES = Counter(
    "ensemble_partner_matches",
    "Matches partners made, by result: matched (a slot reserved) or no_partner",
    ["district", "result"],
)
