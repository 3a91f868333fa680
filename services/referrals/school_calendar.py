"""Follow-up windows on a district's calendar: school days in the district's own time zone.

Pure functions, no I/O. A window of N school days ends at the same local time of day on the
Nth school day after the start (weekends and the district's non-school days do not count);
crisis windows are plain elapsed hours, because a crisis does not wait for Monday.
"""

from collections.abc import Collection
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from contracts.taxonomy import Urgency
from runtime.districts import District

WEEKEND = frozenset({5, 6})  # Saturday, Sunday


def is_school_day(day: date, non_school_days: Collection[date],
                  weekend: Collection[int] = WEEKEND) -> bool:
    return day.weekday() not in weekend and day not in non_school_days


def add_school_days(start: datetime, days: int, zone: ZoneInfo,
                    non_school_days: Collection[date] = (),
                    weekend: Collection[int] = WEEKEND) -> datetime:
    """``start`` plus ``days`` school days, as an aware UTC datetime."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if days < 0:
        raise ValueError("days must be >= 0")
    local = start.astimezone(zone)
    day = local.date()
    counted = 0
    while counted < days:
        day += timedelta(days=1)
        if is_school_day(day, non_school_days, weekend):
            counted += 1
    # Rebuild the wall-clock time on the target day so a DST change in between is honoured.
    end = datetime.combine(day, local.time().replace(tzinfo=None), tzinfo=zone)
    return end.astimezone(UTC)


def add_hours(start: datetime, hours: float) -> datetime:
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    return (start + timedelta(hours=hours)).astimezone(UTC)


def window_end(start: datetime, urgency: Urgency | str, district: District) -> datetime:
    """When a referral of this urgency, with no progress since ``start``, needs follow-up."""
    windows = district.follow_up
    urgency = Urgency(urgency)
    if urgency == Urgency.crisis:
        return add_hours(start, windows.crisis_hours)
    days = windows.urgent_school_days if urgency == Urgency.urgent else windows.routine_school_days
    return add_school_days(start, days, ZoneInfo(district.timezone), set(district.non_school_days))
