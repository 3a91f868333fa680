"""In-school supports in matching: ranked like any partner, unless the district matches them
first or the family shares only inside the school (consent in_school); the reasons say which
was chosen and why. The rule pure, then through the handler (an
in-memory unit of work: the candidate query's in-school-first order on SQLite)."""

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from support.uow import HandlerBench

from contracts.events import (
    ConsentRecorded,
    NoPartnerAvailable,
    PartnerMatched,
    ReferralDeclined,
    ReferralOpened,
)
from contracts.taxonomy import Consent, Need, Urgency
from runtime.settings import Settings
from services.partners import directory, handlers
from services.partners.deps import PartnersDeps
from services.partners.matching import Request, Row, rank
from services.partners.schemas import RegisterPartner
from services.partners.service import build
from services.partners.tables import Base, ReferralRequest, ServiceCapacity

REQ = Request(district_id="d001", school_id="lincoln-es", need="mental_health", grade=3,
              language="es")


def row(service_id: str, **over: object) -> Row:
    base: dict[str, object] = dict(
        service_id=service_id, school_id="lincoln-es", capacity=4, reserved=0,
        partner_id=f"p-{service_id}", partner_name=f"Partner {service_id}", need="mental_health",
        languages_key=",en,es,", grades_key="")
    return Row(**(base | over))  # type: ignore[arg-type]


# The outside partner scores higher (Spanish spoken, all slots open); the counselor does not.
OUTSIDE = row("outside")
COUNSELOR = row("counselor", in_school=True, languages_key=",en,", reserved=3)


def test_without_the_district_setting_the_best_score_wins_whoever_it_is() -> None:
    [first, second] = rank(REQ, [COUNSELOR, OUTSIDE])
    assert first.row is OUTSIDE and second.row is COUNSELOR
    assert first.score > second.score
    assert not any("in-school" in r for r in first.reasons)
    assert "in-school support of lincoln-es" in second.reasons


def test_the_district_setting_puts_every_in_school_support_first_and_says_why() -> None:
    wanted = replace(REQ, in_school_first=True)
    nurse = row("nurse", in_school=True, reserved=2)  # scores above the counselor
    first, second, third = rank(wanted, [OUTSIDE, COUNSELOR, nurse])
    assert [c.row.service_id for c in (first, second, third)] == ["nurse", "counselor",
                                                                  "outside"]
    assert ("in-school support of lincoln-es (the district matches in-school supports first)"
            in first.reasons)
    assert any(r.startswith("score ") for r in first.reasons)  # the score is still explained
    assert third.reasons[6].startswith("outside partner: no in-school support of lincoln-es")


def test_an_in_school_support_must_still_pass_every_hard_rule() -> None:
    wanted = replace(REQ, in_school_first=True, tried_partners=("p-counselor",))
    full = row("full", in_school=True, reserved=4)
    [only] = rank(wanted, [COUNSELOR, full, OUTSIDE])  # tried before; no open slot
    assert only.row is OUTSIDE
    assert "outside partner: no in-school support of lincoln-es eligible (the district " \
           "matches in-school supports first)" in only.reasons


def test_registering_an_in_school_support_names_its_one_school() -> None:
    body = {"district_id": "d001", "name": "Lincoln counselor", "needs": ["mental_health"],
            "capacity": 5, "in_school_of": "lincoln-es"}
    assert RegisterPartner.model_validate(body).schools == ["lincoln-es"]
    assert RegisterPartner.model_validate(body | {"schools": ["lincoln-es"]}).schools == [
        "lincoln-es"]
    try:
        RegisterPartner.model_validate(body | {"schools": ["lincoln-es", "roosevelt-ms"]})
        raise AssertionError("an in-school support serving two schools was accepted")
    except ValidationError as exc:
        [error] = exc.errors()
        assert error["loc"] == ("schools",) and "its own school only" in error["msg"]
    outside = {k: v for k, v in body.items() if k != "in_school_of"}
    try:
        RegisterPartner.model_validate(outside)
        raise AssertionError("a partner without a school was accepted")
    except ValidationError as exc:
        assert [e["loc"] for e in exc.errors()] == [("schools",)]


NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


@pytest.fixture
async def bench() -> AsyncIterator[HandlerBench]:
    async with HandlerBench(Base.metadata) as bench:
        yield bench


def deps(tmp_path: Path, first: bool) -> PartnersDeps:
    built = build(Settings(data_dir=tmp_path), clock=lambda: NOW).deps
    assert isinstance(built, PartnersDeps)
    district = built.runtime.districts.get("d001")
    assert district is not None
    district.match_in_school_first = first
    return built


def opened(referral_id: str) -> ReferralOpened:
    return ReferralOpened(referral_id=referral_id, school_id="lincoln-es",
                          student_ref=f"stu-{referral_id}", family_id="fam-1",
                          need=Need.mental_health, urgency=Urgency.routine,
                          consent=Consent.given, grade=3, opened_at=NOW - timedelta(hours=1))


@pytest.mark.parametrize("first", [True, False])
async def test_the_handler_matches_by_the_districts_setting(
        bench: HandlerBench, tmp_path: Path, first: bool) -> None:
    async with bench.db.transaction() as session:
        outside, _ = await directory.register(
            session, "d001", "Community Counseling", ["mental_health"], ["lincoln-es"],
            ["en"], [], 10)
        counselor, [service] = await directory.register(
            session, "d001", "Lincoln counselor", ["mental_health"], ["lincoln-es"], ["vi"],
            [], 1, in_school_of="lincoln-es")
    assert (await bench.get(ServiceCapacity, (service.id, "lincoln-es"))).in_school
    [event] = await bench.handle(handlers.on_referral_opened, opened("r1"), deps(tmp_path,
                                                                                 first))
    assert isinstance(event, PartnerMatched)
    # The outside partner speaks the family's language (en, none recorded), so it scores
    # higher: only the setting puts the counselor first.
    assert event.partner_id == (counselor.id if first else outside.id)
    said = [r for r in event.reasons if "in-school" in r]
    if first:
        assert said == ["in-school support of lincoln-es (the district matches in-school "
                        "supports first)"]
    else:
        assert said == []


# --- the family shares only inside the school (consent in_school) ----------------------------


def test_sharing_only_inside_the_school_leaves_every_outside_partner_out() -> None:
    inside_only = replace(REQ, in_school_only=True)
    [only] = rank(inside_only, [OUTSIDE, COUNSELOR])  # the outside one scores higher
    assert only.row is COUNSELOR
    assert "consent given for the school's own supports only" in only.reasons
    assert ("in-school support of lincoln-es (the family shares only inside the school)"
            in only.reasons)
    assert rank(inside_only, [OUTSIDE]) == []


async def _register_both(bench: HandlerBench, counselor_capacity: int = 1) -> tuple[str, str]:
    async with bench.db.transaction() as session:
        outside, _ = await directory.register(
            session, "d001", "Community Counseling", ["mental_health"], ["lincoln-es"],
            ["en"], [], 10)
        counselor, _ = await directory.register(
            session, "d001", "Lincoln counselor", ["mental_health"], ["lincoln-es"], ["vi"],
            [], counselor_capacity, in_school_of="lincoln-es")
    return outside.id, counselor.id


async def test_a_referral_shared_inside_the_school_goes_to_the_schools_own_support(
        bench: HandlerBench, tmp_path: Path) -> None:
    outside, counselor = await _register_both(bench)
    inside = opened("r1").model_copy(update={"consent": Consent.in_school})
    [event] = await bench.handle(handlers.on_referral_opened, inside, deps(tmp_path, False))
    assert isinstance(event, PartnerMatched) and event.partner_id == counselor != outside
    # Its partner declines: the next look is inside the school too, and finds no one.
    [none] = await bench.handle(handlers.on_declined, ReferralDeclined(
        referral_id="r1", partner_id=counselor, reason="no_capacity", declined_at=NOW),
        deps(tmp_path, False))
    assert isinstance(none, NoPartnerAvailable)
    assert none.reason.startswith("the family shares only inside the school: ")
    assert (await bench.get(ReferralRequest, "r1")).state == "no_partner"


async def test_widening_consent_after_no_in_school_support_could_take_it_matches_outside(
        bench: HandlerBench, tmp_path: Path) -> None:
    outside, _ = await _register_both(bench, counselor_capacity=0)
    inside = opened("r1").model_copy(update={"consent": Consent.in_school})
    [none] = await bench.handle(handlers.on_referral_opened, inside, deps(tmp_path, False))
    assert isinstance(none, NoPartnerAvailable)
    assert "shares only inside the school" in none.reason
    [event] = await bench.handle(handlers.on_consent, ConsentRecorded(
        referral_id="r1", consent=Consent.given, recorded_by="coord-1", recorded_at=NOW),
        deps(tmp_path, False))
    assert isinstance(event, PartnerMatched) and event.partner_id == outside
    assert "consent given" in event.reasons


async def test_consent_given_after_a_decline_is_matched(bench: HandlerBench,
                                                        tmp_path: Path) -> None:
    outside, _ = await _register_both(bench)
    declined = opened("r1").model_copy(update={"consent": Consent.declined})
    assert await bench.handle(handlers.on_referral_opened, declined, deps(tmp_path, False)) == []
    assert (await bench.get(ReferralRequest, "r1")).state == "consent_declined"
    [event] = await bench.handle(handlers.on_consent, ConsentRecorded(
        referral_id="r1", consent=Consent.given, recorded_by="coord-1", recorded_at=NOW),
        deps(tmp_path, False))
    assert isinstance(event, PartnerMatched) and event.partner_id == outside
