"""When a message may go: quiet hours in the school's time zone and a per-family cap.

Pure functions of an explicit ``now`` so tests can move the clock across time zones and
daylight-saving changes; ``Holds`` applies them to a message (no I/O).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from contracts.taxonomy import Urgency
from runtime.districts import Districts
from services.notifications.opt_outs import TRANSACTIONAL
from services.notifications.settings import NotificationsSettings


@dataclass
class Hold:
    until: datetime
    reason: str


class Routed(Protocol):
    """What a hold looks at: a message row, a claimed one (``claims.Due``), a new row."""

    urgency: str
    kind: str
    district_id: str
    school_id: str
    family_id: str


class Holding(Protocol):
    """What a new message is checked against before it is queued (``Holds``, or the
    dispatcher that holds them)."""

    def hold(self, message: Routed, now: datetime) -> Hold | None: ...


@dataclass
class Holds:
    """Why and until when a routine message must wait; crisis messages and confirmations of
    an opt-out or opt-in never wait."""

    settings: NotificationsSettings
    districts: Districts

    def hold(self, message: Routed, now: datetime,
             recent: dict[str, list[datetime]] | None = None) -> Hold | None:
        if message.urgency == Urgency.crisis or message.kind in TRANSACTIONAL:
            return None
        until = quiet_until(now, self.zone(message), self.settings.quiet_hours_start,
                            self.settings.quiet_hours_end)
        if until:
            return Hold(until, "quiet_hours")
        if recent is not None:
            capped = cap_until(recent.get(message.family_id, []),
                               self.settings.daily_message_cap, now)
            if capped:
                # After the cap lifts, quiet hours may still apply; the next claim checks again.
                return Hold(capped, "daily_cap")
        return None

    def zone(self, message: Routed) -> str:
        school = self.districts.school(message.district_id, message.school_id)
        if school and school.timezone:
            return school.timezone
        district = self.districts.get(message.district_id)
        return district.timezone if district else "UTC"


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
