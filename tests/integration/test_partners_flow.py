"""Matching through the real broker: decline chains, consent, and the gap map's numbers against
a scenario whose answers are known. Partners' answers go through referrals' HTTP endpoints."""

import asyncio
from datetime import UTC, datetime
from typing import Any

from conftest import System, token


async def _partner(system: System, name: str) -> dict[str, Any]:
    found = (await system.http.get("/api/v1/partners", params={"district_id": "d001"})).json()
    return next(p for p in found if p["name"] == name)


async def _matched(system: System, referral_id: str, attempt: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        detail = await system.referral(referral_id)
        matches = [e for e in detail["timeline"] if e["event"] == "PartnerMatched"]
        return matches[-1]["data"] if len(matches) >= attempt else None

    return await system.eventually(check, what=f"match attempt {attempt}")


async def _decline(system: System, referral_id: str, partner_id: str) -> None:
    response = await system.http.post(
        f"/api/v1/referrals/{referral_id}/decline",
        json={"district_id": "d001", "partner_id": partner_id, "reason": "no_capacity"})
    assert response.status_code == 200, response.text


async def test_decline_chain_never_repeats_a_partner(system: System) -> None:
    for name, languages in [("Sonrisa A", ["es"]), ("Sonrisa B", ["en", "es"]),
                            ("English Only", ["en"])]:
        await system.register_partner(name=name, languages=languages, capacity=1)
    family = await system.register_family(preferred_language="es")
    referral = await system.open_referral(family, grade=2)

    seen: list[str] = []
    for attempt in (1, 2, 3):
        match = await _matched(system, referral["id"], attempt)
        assert match["attempt"] == attempt
        assert match["partner_id"] not in seen
        seen.append(match["partner_id"])
        assert any(r.startswith("score ") for r in match["reasons"])
        if attempt < 3:  # both Spanish speakers come before the English-only one
            assert match["partner_name"].startswith("Sonrisa")
            assert "language es spoken" in match["reasons"]
        else:
            assert match["partner_name"] == "English Only"
        await _decline(system, referral["id"], match["partner_id"])

    detail = await system.wait_status(referral["id"], "no_partner")
    [none] = [e for e in detail["timeline"] if e["event"] == "NoPartnerAvailable"]
    assert "already had this referral" in none["data"]["reason"]
    assert none["data"]["candidates_considered"] == 3
    for name in ("Sonrisa A", "Sonrisa B", "English Only"):  # every slot released
        assert (await _partner(system, name))["services"][0]["reserved"] == 0


async def test_consent_gates_matching(system: System) -> None:
    await system.register_partner(capacity=5)
    family = await system.register_family()
    waiting = await system.open_referral(family, consent="pending")
    refused = await system.open_referral(family, consent="pending", need="dental",
                                         student_ref="stu-other")
    response = await system.http.post(
        f"/api/v1/referrals/{refused['id']}/consent",
        json={"district_id": "d001", "consent": "declined", "recorded_by": "counselor"})
    assert response.status_code == 200, response.text
    response = await system.http.post(
        f"/api/v1/referrals/{waiting['id']}/consent",
        json={"district_id": "d001", "consent": "given", "recorded_by": "counselor"})
    assert response.status_code == 200, response.text
    await _matched(system, waiting["id"], 1)
    partner = await _partner(system, "Smile Bright Dental")
    assert partner["services"][0]["reserved"] == 1  # only the consented one holds a slot
    refused_now = await system.referral(refused["id"])
    assert not [e for e in refused_now["timeline"] if e["event"] == "PartnerMatched"]


async def test_gap_map_numbers_match_a_known_scenario(system: System) -> None:
    await system.register_partner(name="Smile", needs=["dental"], capacity=2)
    await system.register_partner(name="Mind", needs=["mental_health"],
                                  schools=["roosevelt-ms"], capacity=1)
    lincoln = await system.register_family()
    roosevelt = await system.register_family(school_id="roosevelt-ms")

    r1 = await system.open_referral(lincoln)  # matched, then services received
    m1 = await _matched(system, r1["id"], 1)
    accept = await system.http.post(f"/api/v1/referrals/{r1['id']}/accept", json={
        "district_id": "d001", "partner_id": m1["partner_id"]})
    assert accept.status_code == 200, accept.text
    closed = await system.http.post(f"/api/v1/referrals/{r1['id']}/close", json={
        "district_id": "d001", "outcome": "services_received"})
    assert closed.status_code == 200, closed.text

    async def learnt() -> dict[str, Any] | None:  # partners has applied the acceptance
        partner = (await system.http.get(f"/api/v1/partners/{m1['partner_id']}",
                                         params={"district_id": "d001"})).json()
        return partner if partner["answers"]["accepted"] == 1 else None

    smile = await system.eventually(learnt, what="the acceptance learnt by partners")
    assert (smile["answers"]["matched"], smile["answers"]["declined"]) == (1, 0)
    r2 = await system.open_referral(lincoln, student_ref="stu-2")  # declined, nobody else
    m2 = await _matched(system, r2["id"], 1)
    assert m2["partner_name"] == "Smile"
    assert "accepted 1 of 1 answered (0.67)" in m2["reasons"]  # learnt from r1
    await _decline(system, r2["id"], m2["partner_id"])
    await system.wait_status(r2["id"], "no_partner")

    r3 = await system.open_referral(lincoln, need="vision", student_ref="stu-3")
    await system.wait_status(r3["id"], "no_partner")
    r4 = await system.open_referral(roosevelt, need="mental_health", student_ref="stu-4")
    await _matched(system, r4["id"], 1)

    today = datetime.now(UTC).date().isoformat()
    params = {"district_id": "d001", "from": today, "to": today}

    async def report() -> dict[str, Any] | None:
        body = (await system.http.get("/api/v1/partners/gaps", params=params)).json()
        return body if body["totals"]["services_received"] == 1 else None

    body = await system.eventually(report, what="closed referral in the gap map")
    rows = {(r["school_id"], r["need"]): r for r in body["rows"]}
    assert {k: v for k, v in rows[("lincoln-es", "dental")].items() if k != "school_id"} == {
        "need": "dental", "opened": 2, "matched": 1, "unmatched": 1, "declined": 1,
        "services_received": 1, "demand": 2, "capacity_offered": 2, "capacity_in_use": 0,
        "partner_count": 1, "partners": ["Smile"], "gap": "unmatched"}
    vision = rows[("lincoln-es", "vision")]
    assert (vision["opened"], vision["unmatched"], vision["gap"]) == (1, 1, "no_partner")
    mind = rows[("roosevelt-ms", "mental_health")]
    assert (mind["opened"], mind["matched"], mind["capacity_offered"], mind["capacity_in_use"],
            mind["gap"]) == (1, 1, 1, 1, "")
    assert "dental" not in body["needs_without_partner"]["lincoln-es"]
    assert {"vision", "food", "mental_health"} <= set(body["needs_without_partner"]["lincoln-es"])
    assert body["totals"]["opened"] == 4

    csv_text = (await system.http.get("/api/v1/partners/gaps", params=params,
                                      headers={"Accept": "text/csv"})).text
    lines = csv_text.splitlines()
    assert lines[0].startswith("school_id,need,opened,matched,unmatched,declined")
    assert "lincoln-es,dental,2,1,1,1,1,2,2,0,1,Smile,unmatched" in lines

    # A coordinator sees their schools only; another month shows no referrals.
    coordinator = {"Authorization": "Bearer " + token(system.settings, "coordinator", "d001",
                                                      ("roosevelt-ms",))}
    mine = (await system.http.get("/api/v1/partners/gaps", params=params,
                                  headers=coordinator)).json()
    assert {r["school_id"] for r in mine["rows"]} == {"roosevelt-ms"}
    assert mine["totals"]["opened"] == 1
    old = (await system.http.get("/api/v1/partners/gaps", params={
        "district_id": "d001", "from": "2020-01-01", "to": "2020-01-31"})).json()
    assert old["totals"]["opened"] == 0 and old["totals"]["capacity_offered"] == 3


async def test_capacity_endpoint_and_roles(system: System) -> None:
    partner = await system.register_partner(capacity=1)
    service_id = partner["services"][0]["id"]
    url = f"/api/v1/partners/services/{service_id}/capacity"
    response = await system.http.put(url, json={"district_id": "d001",
                                                "school_id": "roosevelt-ms", "capacity": 4})
    assert response.status_code == 200, response.text
    assert response.json() == {"school_id": "roosevelt-ms", "capacity": 4, "reserved": 0,
                               "open": 4}
    detail = (await system.http.get(f"/api/v1/partners/{partner['id']}",
                                    params={"district_id": "d001"})).json()
    assert detail["services"][0]["capacity"] == 5
    assert detail["services"][0]["schools"] == ["lincoln-es", "roosevelt-ms"]

    family = await system.register_family()
    referral = await system.open_referral(family)
    await _matched(system, referral["id"], 1)
    below = await system.http.put(url, json={"district_id": "d001", "school_id": "lincoln-es",
                                             "capacity": 0})
    assert below.status_code == 409  # one slot is reserved there

    for role, extra in [("partner", {"partner_id": partner["id"]}), ("integrator", {})]:
        bearer = token(system.settings, role, "d001", (), extra.get("partner_id"))
        for method, path in [("GET", "/api/v1/partners/gaps"),
                             ("GET", "/api/v1/partners/export/hsds"),
                             ("POST", "/api/v1/partners/import/hsds")]:
            refused = await system.http.request(method, path, params={"district_id": "d001"},
                                                headers={"Authorization": f"Bearer {bearer}"})
            assert refused.status_code == 403, (role, path)


async def test_the_same_capacity_again_changes_and_announces_nothing(system: System) -> None:
    from support.streams import stream_messages

    partner = await system.register_partner(capacity=1)
    url = f"/api/v1/partners/services/{partner['services'][0]['id']}/capacity"
    body = {"district_id": "d001", "school_id": "lincoln-es", "capacity": 4}
    first = await system.http.put(url, json=body)
    assert first.status_code == 200 and "Already-Applied" not in first.headers, first.text
    again = await system.http.put(url, json=body)
    assert again.status_code == 200 and again.headers["Already-Applied"] == "true"
    assert again.json() == first.json()

    async def announced() -> list[bytes]:
        return [m for m in await stream_messages(system.settings.nats_url)
                if b"capacity_changed" in m]

    await system.eventually(announced, what="CapacityChanged published")
    await asyncio.sleep(0.5)  # the relay publishes right after the commit
    assert len(await announced()) == 1
