"""The COST review's selection, pure: which referrals a school's team sees at its weekly
meeting, why each is stuck, and in which order."""

from datetime import UTC, datetime, timedelta

from services.referrals.cost_review import select_for_review, stuck_reasons, week_start
from services.referrals.follow_up import DUE_FIRED, ESCALATED, PENDING
from services.referrals.tables import Referral

# Thursday 3 December 2026, 18:00 UTC: 10:00 in Los Angeles, the week began Monday 30 Nov.
NOW = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)
MONDAY = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # 00:00 in Los Angeles (PST, UTC-8)


def referral(rid: str, opened: datetime, status: str = "matched", **over: object) -> Referral:
    values: dict[str, object] = dict(
        id=rid, district_id="d001", school_id="lincoln-es", student_ref=f"stu-{rid}",
        family_id="f1", need="dental", urgency="routine", consent="given", status=status,
        partner_id="p1" if status in ("matched", "accepted", "in_service") else None,
        opened_at=opened, updated_at=opened, follow_up_stage=PENDING,
        follow_up_due_at=NOW + timedelta(days=3), follow_up_reason="no_progress",
        match_attempt=1)
    return Referral(**(values | over))


def test_the_week_starts_monday_midnight_at_the_school() -> None:
    assert week_start(NOW, "America/Los_Angeles") == MONDAY
    assert week_start(MONDAY, "America/Los_Angeles") == MONDAY
    assert week_start(MONDAY - timedelta(seconds=1), "America/Los_Angeles") == \
        MONDAY - timedelta(days=7)
    assert week_start(NOW, "America/Chicago") == datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


def test_each_stuck_reason_on_its_own() -> None:
    old = MONDAY - timedelta(days=20)
    cases = {
        "no_partner": referral("a", old, "no_partner", follow_up_due_at=old,
                               follow_up_reason="no_partner"),
        "family_unreachable": referral("b", old, follow_up_due_at=NOW - timedelta(hours=1),
                                       follow_up_reason="family_unreachable"),
        "overdue": referral("c", old, follow_up_stage=DUE_FIRED),
    }
    for reason, row in cases.items():
        assert stuck_reasons(row, 0, NOW) == (reason,), reason
    assert stuck_reasons(referral("d", old, "declined"), 2, NOW) == ("declined_twice",)
    assert stuck_reasons(referral("e", old, "declined"), 1, NOW) == ()
    assert stuck_reasons(referral("f", old, follow_up_stage=ESCALATED), 0, NOW) == ("overdue",)
    # Due and not yet fired by the timer counts as overdue too; not yet due does not.
    assert stuck_reasons(referral("g", old, follow_up_due_at=NOW), 0, NOW) == ("overdue",)
    assert stuck_reasons(referral("h", old), 0, NOW) == ()


def test_several_reasons_are_all_listed_and_an_ended_referral_is_never_stuck() -> None:
    row = referral("a", MONDAY, "no_partner", follow_up_stage=ESCALATED,
                   follow_up_reason="no_partner")
    assert stuck_reasons(row, 3, NOW) == ("no_partner", "declined_twice", "overdue")
    closed = referral("b", MONDAY, "closed", follow_up_stage=ESCALATED,
                      follow_up_reason="family_unreachable")
    assert stuck_reasons(closed, 5, NOW) == ()


def test_the_list_holds_this_weeks_and_the_stuck_ones_stuck_first() -> None:
    rows = [
        referral("old-fine", MONDAY - timedelta(days=30)),  # neither: left off
        referral("new-1", MONDAY + timedelta(hours=1)),
        referral("new-2", MONDAY + timedelta(days=2)),
        referral("new-closed", MONDAY + timedelta(days=1), "closed"),  # this week: listed
        referral("old-stuck", MONDAY - timedelta(days=9), "no_partner",
                 follow_up_reason="no_partner", follow_up_due_at=MONDAY),
        referral("new-stuck", MONDAY + timedelta(days=1), "declined"),
        referral("old-closed", MONDAY - timedelta(days=9), "closed"),  # ended before: left off
    ]
    entries = select_for_review(rows, {"new-stuck": 2, "new-1": 1}, NOW, MONDAY)
    assert [e.referral.id for e in entries] == [
        "old-stuck", "new-stuck",  # stuck, oldest first
        "new-2", "new-closed", "new-1"]  # then this week's, newest first
    by_id = {e.referral.id: e for e in entries}
    assert by_id["old-stuck"].stuck == ("no_partner",)
    assert not by_id["old-stuck"].opened_this_week
    assert by_id["new-stuck"].stuck == ("declined_twice",) and by_id["new-stuck"].declines == 2
    assert by_id["new-stuck"].opened_this_week
    assert by_id["new-1"].stuck == () and by_id["new-1"].declines == 1
    assert by_id["new-2"].referral.partner_id == "p1"  # the support holding it
