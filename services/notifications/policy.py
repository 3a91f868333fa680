"""When a message may go: quiet hours in the school's time zone and a per-family cap.

Pure functions of an explicit ``now`` so tests can move the clock across time zones and
daylight-saving changes.
"""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


def quiet_until(now: datetime, zone: str, start: time, end: time) -> datetime | None:
    """The end of quiet hours (UTC) if ``now`` falls inside them in ``zone``, else None.

    The window runs from ``start`` to ``end`` local wall time and may span midnight
    (20:00-08:00). The end is computed on the local calendar, so across a daylight-saving
    change it is still 08:00 local, whatever the number of elapsed hours.
    """
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    clock = local.time().replace(tzinfo=None)
    if start == end:
        return None
    if start < end:  # a window inside one day, e.g. 12:00-13:00
        inside = start <= clock < end
        end_day = local.date()
    else:  # spans midnight
        inside = clock >= start or clock < end
        end_day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    # fold=0 and ZoneInfo give the right instant even on the day the clocks change.
    local_end = datetime.combine(end_day, end, tzinfo=tz)
    return local_end.astimezone(UTC)


def cap_until(sent_in_window: list[datetime], cap: int, now: datetime,
              window: timedelta = timedelta(hours=24)) -> datetime | None:
    """When a family that already got ``sent_in_window`` messages may get one more."""
    recent = sorted(t for t in sent_in_window if t > now - window)
    if len(recent) < cap:
        return None
    return recent[len(recent) - cap] + window
