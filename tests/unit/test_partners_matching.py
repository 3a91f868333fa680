"""The pure matching rules and ranking, one rule at a time; and the Need mapping."""

import pytest

from contracts.taxonomy import Need
from services.partners.matching import (
    Request,
    Row,
    grades_for_ages,
    grades_key,
    languages_key,
    rank,
    rule_failures,
)
from services.partners.taxonomy_map import Term, need_for

REQ = Request(district_id="d001", school_id="lincoln-es", need="dental", grade=3, language="es")


def row(service_id: str = "s1", **over: object) -> Row:
    base: dict[str, object] = dict(
        service_id=service_id, school_id="lincoln-es", capacity=4, reserved=0,
        partner_id=f"p-{service_id}", partner_name=f"Partner {service_id}", need="dental",
        languages_key=",en,", grades_key="")
    return Row(**(base | over))  # type: ignore[arg-type]


@pytest.mark.parametrize(("over", "rule"), [
    ({"service_status": "inactive"}, "service inactive"),
    ({"partner_status": "inactive"}, "organization inactive"),
    ({"need": "vision"}, "need vision is not dental"),
    ({"school_id": "roosevelt-ms"}, "school lincoln-es not served"),
    ({"grades_key": grades_key([6, 7, 8])}, "grade 3 not served"),
    ({"reserved": 4}, "no open slot"),
    ({"partner_id": "p-tried"}, "partner already had this referral"),
])
def test_each_hard_rule_excludes(over: dict[str, object], rule: str) -> None:
    request = Request(**{**REQ.__dict__, "tried_partners": ("p-tried",)})
    assert rule_failures(request, row(**over)) == [rule]
    assert rank(request, [row(**over)]) == []


def test_no_grade_on_the_referral_passes_a_grade_limited_service() -> None:
    request = Request(**{**REQ.__dict__, "grade": None})
    assert rule_failures(request, row(grades_key=grades_key([6]))) == []


def test_language_outranks_everything_else() -> None:
    english = row("a", languages_key=",en,", accepted=9, declined=0, accept_seconds=9 * 60)
    spanish = row("b", languages_key=",en,es,", reserved=3)
    [first, second] = rank(REQ, [english, spanish])
    assert first.row.service_id == "b"
    assert "language es spoken" in first.reasons
    assert "language es not spoken" in second.reasons


def test_more_open_capacity_ranks_higher() -> None:
    ranked = rank(REQ, [row("a", reserved=3), row("b", reserved=0)])
    assert [c.row.service_id for c in ranked] == ["b", "a"]
    assert "4 of 4 slots open at lincoln-es" in ranked[0].reasons


def test_acceptance_history_ranks_higher() -> None:
    good = row("a", accepted=8, declined=2)
    poor = row("b", accepted=1, declined=9)
    ranked = rank(REQ, [poor, good])
    assert ranked[0].row.service_id == "a"
    assert ranked[0].parts["acceptance"] == pytest.approx(9 / 12)
    assert "accepted 8 of 10 answered (0.75)" in ranked[0].reasons


def test_quicker_acceptance_ranks_higher() -> None:
    quick = row("a", accepted=2, accept_seconds=2 * 3600)  # 1 h on average
    slow = row("b", accepted=2, accept_seconds=2 * 72 * 3600)  # 3 days
    ranked = rank(REQ, [slow, quick])
    assert ranked[0].row.service_id == "a"
    assert "accepts in 1.0 h on average" in ranked[0].reasons


def test_lighter_load_ranks_higher() -> None:
    ranked = rank(REQ, [row("a", active=5), row("b", active=0)])
    assert ranked[0].row.service_id == "b"
    assert "holds 0 referrals now" in ranked[0].reasons


def test_ties_break_by_service_id_and_the_score_explains_itself() -> None:
    ranked = rank(REQ, [row("z"), row("a"), row("m")])
    assert [c.row.service_id for c in ranked] == ["a", "m", "z"]
    top = ranked[0]
    assert top.reasons[:6] == ["need dental offered", "school lincoln-es served",
                               "all grades", "open slot",
                               "consent given", "not tried before"]
    assert top.reasons[-1].startswith(f"score {top.score} = 0.40 x language")
    assert 0 <= top.score <= 1


def test_keys_and_ages() -> None:
    assert languages_key(["es-MX", "en", "EN_us"]) == ",en,es,"
    assert grades_key([2, 1, 1]) == ",1,2,"
    assert grades_for_ages(None, None) == []
    assert grades_for_ages(5, 10) == [-1, 0, 1, 2, 3, 4, 5]  # overlaps ages 4-5 .. 10-11
    assert grades_for_ages(0, 120) == []  # every grade
    assert grades_for_ages(30, 60) == [99]  # adults only: no school grade


@pytest.mark.parametrize(("terms", "name", "need"), [
    ([Term("dental", "", "ensemble-need")], "", Need.dental),
    ([Term("BD-1800.2000", "Food Pantries")], "", Need.food),
    ([Term("BM-6500.1500", "")], "", Need.clothing),
    ([Term("RP-1500.1400", "")], "", Need.crisis),
    ([Term("RP-1400", "")], "", Need.mental_health),
    ([Term("", "Vision Care")], "", Need.vision),
    ([], "After-School Robotics Club", Need.after_school),
    ([], "Saturday tutoring", Need.tutoring),
    ([], "Something else entirely", Need.other),
])
def test_need_mapping(terms: list[Term], name: str, need: Need) -> None:
    assert need_for(terms, name)[0] == need
