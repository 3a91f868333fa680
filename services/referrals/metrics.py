"""Referral metrics. Labels are districts, statuses, urgencies and needs: bounded, never ids."""

from prometheus_client import Counter, Gauge, Histogram

REFERRALS_OPEN = Gauge(
    "ensemble_referrals_open", "Open referrals by status and urgency",
    ["district", "status", "urgency"],
)
REFERRALS_OVERDUE = Gauge(
    "ensemble_referrals_overdue", "Open referrals whose follow-up is due or overdue", ["district"]
)
TIME_TO_CONTACT = Histogram(
    "ensemble_referral_time_to_contact_seconds",
    "From a referral's opening to the first time the family was reached",
    ["district"],
    buckets=(600, 1800, 3600, 4 * 3600, 8 * 3600, 86400, 2 * 86400, 3 * 86400, 7 * 86400,
             14 * 86400),
)
NO_PARTNER = Counter(
    "ensemble_no_partner", "Referrals partners found no partner for", ["district", "need"]
)


def set_open_counts(counts: dict[tuple[str, str, str], int],
                    overdue: dict[str, int]) -> None:
    """Replace the gauges' values; series that dropped to nothing read 0, not a stale value."""
    for labels in list(_seen_open - counts.keys()):
        REFERRALS_OPEN.labels(*labels).set(0)
    for labels, value in counts.items():
        REFERRALS_OPEN.labels(*labels).set(value)
    _seen_open.update(counts)
    for district in list(_seen_overdue - overdue.keys()):
        REFERRALS_OVERDUE.labels(district).set(0)
    for district, value in overdue.items():
        REFERRALS_OVERDUE.labels(district).set(value)
    _seen_overdue.update(overdue)


_seen_open: set[tuple[str, str, str]] = set()
_seen_overdue: set[str] = set()
