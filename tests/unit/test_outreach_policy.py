"""Quiet hours, the daily cap, keywords and RSVPs as pure functions of an explicit clock."""

from datetime import UTC, datetime, time, timedelta

import pytest

from contracts.taxonomy import Channel
from services.engagement.contacts import rotate
from services.engagement.rsvp import parse_rsvp
from services.notifications.inbound import START_WORDS, STOP_WORDS, keyword
from services.notifications.policy import cap_until, quiet_until

LA, NY = "America/Los_Angeles", "America/New_York"
START, END = time(20, 0), time(8, 0)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_quiet_hours_follow_the_schools_zone_not_the_servers() -> None:
    now = utc(2026, 3, 3, 2, 30)  # 21:30 in New York, 18:30 in Los Angeles
    assert quiet_until(now, NY, START, END) == utc(2026, 3, 3, 13, 0)  # 08:00 EST
    assert quiet_until(now, LA, START, END) is None


def test_quiet_hours_across_midnight_end_the_same_morning() -> None:
    assert quiet_until(utc(2026, 3, 3, 9, 0), LA, START, END) == utc(2026, 3, 3, 16, 0)  # 01:00
    assert quiet_until(utc(2026, 3, 3, 16, 0), LA, START, END) is None  # 08:00 sharp: open


def test_quiet_hours_end_at_eight_local_across_the_spring_forward() -> None:
    # 2026-03-08 02:00 PST -> 03:00 PDT. 21:00 PST on the 7th is 05:00 UTC on the 8th.
    until = quiet_until(utc(2026, 3, 8, 5, 0), LA, START, END)
    assert until == utc(2026, 3, 8, 15, 0)  # 08:00 PDT (UTC-7), 10 elapsed hours, not 11
    assert until - utc(2026, 3, 8, 5, 0) == timedelta(hours=10)


def test_quiet_hours_end_at_eight_local_across_the_fall_back() -> None:
    # 2026-11-01 02:00 PDT -> 01:00 PST. 21:00 PDT on Oct 31 is 04:00 UTC on Nov 1.
    until = quiet_until(utc(2026, 11, 1, 4, 0), LA, START, END)
    assert until == utc(2026, 11, 1, 16, 0)  # 08:00 PST (UTC-8): 12 elapsed hours
    # In the repeated hour (01:30 happens twice) it is quiet both times.
    assert quiet_until(utc(2026, 11, 1, 8, 30), LA, START, END) == until
    assert quiet_until(utc(2026, 11, 1, 9, 30), LA, START, END) == until


def test_daily_cap_is_a_rolling_day() -> None:
    now = utc(2026, 3, 3, 18, 0)
    sent = [now - timedelta(hours=h) for h in (1, 5, 23)]
    assert cap_until(sent, 4, now) is None
    assert cap_until(sent, 3, now) == now - timedelta(hours=23) + timedelta(hours=24)
    assert cap_until([now - timedelta(hours=30)], 1, now) is None


@pytest.mark.parametrize("text", ["STOP", "stop", " Stop. ", "UNSUBSCRIBE", "cancel", "End",
                                  "quit"])
def test_stop_words_in_any_case(text: str) -> None:
    assert keyword(text) in STOP_WORDS


def test_a_sentence_with_stop_in_it_is_a_reply_and_start_opts_in() -> None:
    assert keyword("please stop by on friday") == ""
    assert keyword("start") in START_WORDS


@pytest.mark.parametrize(("text", "answer"), [
    ("Yes!", "yes"), ("sí, vamos", "yes"), ("Có", "yes"), ("是的我们会来", "yes"), ("نعم", "yes"),
    ("No, sorry", "no"), ("không", "no"), ("不去", "no"), ("لا", "no"), ("what time?", None),
])
def test_rsvp_replies_in_the_families_languages(text: str, answer: str | None) -> None:
    assert parse_rsvp(text) == answer


def test_attempts_alternate_channels() -> None:
    both = [Channel.sms, Channel.email]
    assert [rotate(both, n)[0] for n in (1, 2, 3)] == [Channel.sms, Channel.email, Channel.sms]
