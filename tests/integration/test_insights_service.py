"""The insights service as an integrator, on a real nats-server and each database: a district's
year published as public events (through the contracts), the monthly pack over HTTP (JSON,
CSV, the HTML page with its charts, the PDF read back), each role's reach, and a rebuild from
the streams that gives the same pack."""

import csv
import io
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import nats
import pypdf
import pytest
from conftest import running, token
from support.waiting import eventually
from typer.testing import CliRunner

from benchmarks.district_year import Published, district_year, publish
from contracts.events import ReferralClosed, ReferralOpened
from ensemble.cli import app
from runtime.settings import Settings
from services.insights.rebuild import caught_up, rebuild
from services.insights.service import build

END = datetime(2026, 4, 1, 12, tzinfo=UTC)
MONTH = "2026-03"
ZONE = ZoneInfo("America/Los_Angeles")  # d001's


def opened_by_need_and_month(items: list[Published], school: str | None) -> Counter[tuple]:
    """What the pack's first table must say, counted from the events themselves."""
    counts: Counter[tuple[str, str]] = Counter()
    for item in items:
        env = item.envelope
        if env.type != ReferralOpened.ce_type() or env.districtid != "d001":
            continue
        if school and env.data["school_id"] != school:
            continue
        at = datetime.fromisoformat(env.data["opened_at"]).astimezone(ZONE)
        counts[(env.data["need"], at.strftime("%Y-%m"))] += 1
    return counts


def check_table(table: dict, expected: Counter[tuple], months: list[str]) -> None:
    """Every count shown is the events' count; every withheld one is small or a complement."""
    total = 0
    for row in table["rows"][:-1]:
        need = row[0]
        for month, text in zip(months, row[1:13], strict=True):
            value = expected[(need, month)]
            total += value
            if text == "<10":
                assert 0 < value < 10, (need, month, value)
            elif text != "*":
                assert int(text) == value, (need, month, text, value)
    assert sum(v for (_, m), v in expected.items() if m in months) == total
    assert table["rows"][-1][-1] in (str(total), "*", "<10")


async def get(url: str, path: str, bearer: str, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {bearer}"}) as http:
        return await http.get(path, params=params)


async def test_the_pack_comes_from_the_public_events_and_a_rebuild_gives_the_same(
        settings: Settings) -> None:
    items = list(district_year(400, district="d001", schools=["lincoln-es", "roosevelt-ms"],
                               end=END, seed=3))
    other = list(district_year(60, district="d002", schools=["lakeview-hs"], end=END, seed=4))
    leadership = token(settings, "leadership", "d001")
    coordinator = token(settings, "coordinator", "d001", ("lincoln-es",))
    service = build(settings)
    async with running(settings, [service]) as url:
        nc = await nats.connect(settings.nats_url)
        try:
            await publish(nc.jetstream(), items + other)
        finally:
            await nc.close()
        await eventually(lambda: caught_up(service.runtime), "the store caught up", 180, 0.5)
        district = (await get(url, f"/api/v1/insights/packs/{MONTH}", leadership)).json()
        school = await get(url, f"/api/v1/insights/packs/{MONTH}", coordinator,
                           school_id="lincoln-es")
        assert school.status_code == 200, school.text
        school_pack = school.json()
        months = district["months"]
        assert months[0] == "2025-04" and months[-1] == MONTH
        tables = {t["key"]: t for t in district["tables"]}
        check_table(tables["referrals_opened"], opened_by_need_and_month(items, None), months)
        check_table({t["key"]: t for t in school_pack["tables"]}["referrals_opened"],
                    opened_by_need_and_month(items, "lincoln-es"), months)
        closed = sum(1 for i in items if i.envelope.type == ReferralClosed.ce_type())
        assert 0 < int(tables["referrals_closed"]["rows"][-1][-1]) <= closed

        # Each table as CSV is the JSON's table; the page draws three charts; the PDF says the
        # same figures as the JSON.
        csv_text = (await get(url, f"/api/v1/insights/packs/{MONTH}/tables/outcomes.csv",
                              leadership)).text
        assert list(csv.reader(io.StringIO(csv_text))) == \
            [tables["outcomes"]["header"], *tables["outcomes"]["rows"]]
        page = (await get(url, f"/api/v1/insights/packs/{MONTH}/page", leadership)).text
        assert page.count("<svg") == 3 and "Referrals opened and closed by month" in page
        pdf = await get(url, f"/api/v1/insights/packs/{MONTH}/pdf", leadership)
        assert pdf.headers["content-type"] == "application/pdf"
        text = "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf.content)).pages)
        for figure in district["figures"]:
            assert f"{figure['label']}: {figure['value']}" in text.replace("\n", " ") or \
                figure["value"] in text, figure
        assert "Referrals opened by need and month" in text and "stu-" not in text

        # Who reads what.
        assert (await get(url, f"/api/v1/insights/packs/{MONTH}", coordinator)).status_code \
            == 403  # the district's pack is not a coordinator's
        assert (await get(url, f"/api/v1/insights/packs/{MONTH}", coordinator,
                          school_id="roosevelt-ms")).status_code == 403
        other_leader = token(settings, "leadership", "d002")
        assert (await get(url, f"/api/v1/insights/packs/{MONTH}", other_leader,
                          school_id="lincoln-es")).status_code == 404
        d002 = (await get(url, f"/api/v1/insights/packs/{MONTH}", other_leader)).json()
        assert d002["tables"][0]["rows"][-1][-1] != tables["referrals_opened"]["rows"][-1][-1]
        assert (await get(url, f"/api/v1/insights/packs/{MONTH}",
                          token(settings, "partner", "d001", partner_id="p1"))).status_code \
            == 403
        bad = await get(url, "/api/v1/insights/packs/2026-13", leadership)
        assert bad.status_code == 422 and "month" in bad.text

    rebuilt = await rebuild(settings)
    assert rebuilt.rows["insights_referrals"] == 460
    again = build(settings)
    async with running(settings, [again], migrate=False) as url:
        after = (await get(url, f"/api/v1/insights/packs/{MONTH}", leadership)).json()
        for key in district:
            if key == "tables":
                for t1, t2 in zip(district[key], after[key], strict=True):
                    assert t1 == t2, t1["key"]
            assert district[key] == after[key], key
        assert (await get(url, f"/api/v1/insights/packs/{MONTH}", coordinator,
                          school_id="lincoln-es")).json() == school_pack


async def test_the_running_system_s_own_events_reach_the_pack(system) -> None:  # type: ignore[no-untyped-def]
    """The services' real events (not generated ones) are enough: a referral opened and
    matched through the APIs is counted, as a small cell, in this month's pack."""
    partner = await system.register_partner(name="Smile Bright Dental")
    family = await system.register_family()
    referral = await system.open_referral(family)
    await system.wait_status(referral["id"], "matched", timeout=30)
    insights = system.services["insights"]
    leadership = token(system.settings, "leadership", "d001")
    month = datetime.now(ZONE).strftime("%Y-%m")

    async def counted() -> dict | None:
        await caught_up(insights.runtime)
        url = str(system.http.base_url).rstrip("/")
        found = (await get(url, f"/api/v1/insights/packs/{month}", leadership)).json()
        tables = {t["key"]: t for t in found["tables"]}
        partners = tables["partners"]["rows"]
        return found if tables["referrals_opened"]["rows"][-1][-1] == "<10" and \
            partners[0][0] == partner["name"] else None

    pack = await eventually(counted, "the referral in the pack", 60, 0.5)
    page = await get(str(system.http.base_url).rstrip("/"),
                     f"/api/v1/insights/packs/{month}/page", leadership)
    assert family["name"] not in page.text and referral["student_ref"] not in page.text
    assert pack["tables"][0]["rows"][0][0] == "dental"


def test_ensemble_insights_rebuild_on_the_command_line(nats_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", nats_url)
    monkeypatch.delenv("INSIGHTS_DATABASE_URL", raising=False)
    monkeypatch.delenv("ENSEMBLE_DATABASE_SCHEMA_PREFIX", raising=False)
    runner = CliRunner()
    data = str(tmp_path / "data")
    refused = runner.invoke(app, ["insights", "rebuild", "--data-dir", data])
    assert refused.exit_code == 1  # not migrated: says what to run
    assert runner.invoke(app, ["migrate", "insights", "--data-dir", data]).exit_code == 0
    done = runner.invoke(app, ["insights", "rebuild", "--data-dir", data])
    assert done.exit_code == 0, done.output
    lines = [line for line in done.output.splitlines() if not line.startswith("{")]
    assert "insights_referrals: 0 rows" in lines and lines[-1].startswith("rebuilt from the")
