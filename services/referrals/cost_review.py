"""The COST review: the list a school's Coordination of Services Team goes through at its
weekly meeting. Pure selection (no I/O, no clock): the route in api.py reads the rows.

A referral is on the list when it was opened this week (since Monday 00:00 at the school), or
when it is open and stuck, for any of these reasons (all that apply are listed):

    no_partner          partners found no eligible service for it
    declined_twice      two or more partners declined it
    family_unreachable  engagement could not reach the family
    overdue             its follow-up is past due (or escalated) without progress

Each entry names the support that holds it now (the partner id, an in-school support's too),
none while it waits for one. Stuck ones come first, oldest first; then this week's, newest
first.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.referrals.follow_up import DUE_FIRED, ESCALATED
from services.referrals.lifecycle import OPEN, Status
from services.referrals.tables import Referral

STUCK = ("no_partner", "declined_twice", "family_unreachable", "overdue")
# Follow-up reasons that make a referral due at once: said by their own stuck reason instead.
_AT_ONCE = {"no_partner", "family_unreachable"}


@dataclass(frozen=True)
class Entry:
    referral: Referral
    opened_this_week: bool
    stuck: tuple[str, ...]
    declines: int


def week_start(now: datetime, timezone: str) -> datetime:
    """Monday 00:00 of ``now``'s week at the school, in UTC."""
    local = now.astimezone(ZoneInfo(timezone))
    monday = local.date() - timedelta(days=local.weekday())
    return datetime.combine(monday, time.min, ZoneInfo(timezone)).astimezone(UTC)


def stuck_reasons(referral: Referral, declines: int, now: datetime) -> tuple[str, ...]:
    """Why an open referral needs the team, in STUCK's order; empty when it does not."""
    status = Status(referral.status)
    if status not in OPEN:
        return ()
    reason = referral.follow_up_reason
    due = referral.follow_up_due_at
    late = (referral.follow_up_stage in (DUE_FIRED, ESCALATED)
            or (due is not None and due <= now and reason not in _AT_ONCE))
    found = {
        "no_partner": status == Status.no_partner,
        "declined_twice": declines >= 2,
        "family_unreachable": reason == "family_unreachable",
        "overdue": late,
    }
    return tuple(name for name in STUCK if found[name])


def select_for_review(referrals: Iterable[Referral], declines: Mapping[str, int],
                      now: datetime, since: datetime) -> list[Entry]:
    """The referrals on the list (opened at or after ``since``, or stuck), in its order;
    ``declines`` counts each referral's partner declines (missing: none)."""
    entries = []
    for referral in referrals:
        count = declines.get(referral.id, 0)
        stuck = stuck_reasons(referral, count, now)
        fresh = referral.opened_at >= since
        if stuck or fresh:
            entries.append(Entry(referral, fresh, stuck, count))
    stuck_first = sorted((e for e in entries if e.stuck),
                         key=lambda e: (e.referral.opened_at, e.referral.id))
    fresh_only = sorted((e for e in entries if not e.stuck),
                        key=lambda e: (e.referral.opened_at, e.referral.id), reverse=True)
    return stuck_first + fresh_only
