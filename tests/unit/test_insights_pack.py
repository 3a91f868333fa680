"""The data pack from facts, pure: the figures it computes, its suppression, and its renderings
(CSV, SVG charts, PDF read back with pypdf) carrying those figures and nothing withheld."""

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pypdf

from services.insights.domain import (
    Capacity,
    Facts,
    Referral,
    Step,
    answered_matches,
    build_pack,
    months_ending,
    percentile,
)
from services.insights.render import charts, html_page, pdf_bytes, table_csv

ZONE = ZoneInfo("America/Los_Angeles")
T0 = datetime(2026, 3, 2, 17, tzinfo=UTC)


def facts(referrals: int = 40, closed: int = 25, received: int = 20) -> Facts:
    """``referrals`` dental or food referrals opened in March 2026, matched 5 hours later to
    one partner who declines every fourth after 2 hours and accepts the others after 4; the
    first ``closed`` closed 25 days after T0, ``received`` of them with services received."""
    f = Facts(service_needs={"s1": "dental"})
    f.capacity.append(Capacity("s1", "lincoln-es", "p1", 12, 3, T0))
    for i in range(referrals):
        rid, need = f"r{i}", ("dental" if i % 3 else "food")
        opened = T0 + timedelta(days=i % 20)
        f.referrals.append(Referral(rid, "lincoln-es", need, opened))
        f.steps.append(Step(rid, "matched", opened + timedelta(hours=5), "p1", "Smile Bright",
                            "s1", need))
        declined = i % 4 == 0
        f.steps.append(Step(rid, "declined" if declined else "accepted",
                            opened + timedelta(hours=7 if declined else 9), "p1"))
        if i < closed:
            f.steps.append(Step(rid, "closed", T0 + timedelta(days=25),
                                outcome="services_received" if i < received
                                else "family_declined"))
    return f


def pack(f: Facts, threshold: int = 10):  # type: ignore[no-untyped-def]
    return build_pack(f, district_id="d001", school_id="lincoln-es", month="2026-03",
                      zone=ZONE, threshold=threshold)


def figure(p, label: str) -> str:  # type: ignore[no-untyped-def]
    return next(f.value for f in p.figures if f.label.startswith(label))


def test_the_window_is_twelve_months_ending_with_the_pack_month() -> None:
    assert months_ending("2026-03") == (
        "2025-04", "2025-05", "2025-06", "2025-07", "2025-08", "2025-09", "2025-10",
        "2025-11", "2025-12", "2026-01", "2026-02", "2026-03")
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([0, 10], 90) == 9.0


def test_figures_from_the_facts() -> None:
    p = pack(facts())
    opened = p.table("referrals_opened")
    assert opened.body[0][0] == "dental" and opened.body[0][-2:] == ("26", "26")
    assert opened.body[1][0] == "food" and opened.body[1][-1] == "14"
    assert opened.body[-1][-1] == "40"
    assert figure(p, "Days from opened to matched") == "0.2 / 0.2 (n=40)"
    assert figure(p, "Partners' hours to answer") == "4.0 / 4.0 (n=40)"
    assert figure(p, "Partners' decline rate") == "25%"
    partners = p.table("partners")
    assert partners.body[0] == ("Smile Bright", "30", "10", "0", "40")
    demand = p.table("demand_capacity")
    assert demand.body[0] == ("dental", "26", "0", "12", "3")
    # 20 received and 5 declined of 25: the 5 is small, so the 20 is withheld with it (the
    # total would give it away) and the share made of them is withheld too.
    outcomes = p.table("outcomes")
    assert [row[1] for row in outcomes.body] == ["*", "<10", "25"]
    assert figure(p, "Share of ended referrals") == "withheld"


def test_a_share_is_shown_when_its_counts_are() -> None:
    p = pack(facts(referrals=40, closed=40, received=28))
    assert [row[1] for row in p.table("outcomes").body] == ["28", "12", "40"]
    assert figure(p, "Share of ended referrals") == "70%"


def test_a_small_school_shows_nothing_that_identifies_a_family() -> None:
    p = pack(facts(referrals=4, closed=2, received=1))
    assert figure(p, "Days from opened to matched").startswith("withheld")
    assert p.table("referrals_opened").body[-1][-1] == "<10"
    assert all(cell in ("0", "<10", "*") for row in p.table("referrals_opened").body
               for cell in row[1:])


def test_answers_pair_with_their_own_match_in_any_order() -> None:
    rid = "r1"
    steps = [Step(rid, "matched", T0, "p1"), Step(rid, "declined", T0 + timedelta(hours=1), "p1"),
             Step(rid, "matched", T0 + timedelta(hours=2), "p1"),
             Step(rid, "accepted", T0 + timedelta(hours=5), "p1")]
    pairs = answered_matches(steps)
    assert sorted((m.at, a.step if a else None) for m, a in pairs) == \
        [(T0, "declined"), (T0 + timedelta(hours=2), "accepted")]
    assert sorted((m.at, a.step if a else None) for m, a in answered_matches(steps[::-1])) == \
        sorted((m.at, a.step if a else None) for m, a in pairs)


def test_csv_page_and_pdf_carry_the_figures_and_never_a_withheld_count() -> None:
    p = pack(facts())
    outcomes = p.table("outcomes")
    assert list(csv.reader(io.StringIO(table_csv(outcomes)))) == \
        [list(outcomes.header), *map(list, outcomes.body)]
    svgs = charts(p)
    assert len(svgs) == 3 and all(s.startswith("<svg") for s in svgs)
    mix = svgs[1]
    assert "services_received" in mix and ": 20<" not in mix and "&lt;10" in mix
    page = html_page(p, {"pdf": "/x.pdf"})
    assert page.count("<svg") == 3 and 'href="/x.pdf"' in page and "<script" not in page
    text = " ".join(pg.extract_text() for pg in pypdf.PdfReader(io.BytesIO(pdf_bytes(p))).pages)
    text = re.sub(r"\s+", " ", text)
    assert "Data pack 2026-03: district d001, school lincoln-es" in text
    assert "Partners' decline rate (declined / answered): 25%" in text
    assert "Days from opened to matched (median / 90th percentile): 0.2 / 0.2 (n=40)" in text
    assert "Smile Bright 30 10 0 40" in text
