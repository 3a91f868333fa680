"""Which referral a text answers when one phone has several open: a reply code in the message
names it, a text that names none is held for a coordinator (never given to the message we
wrote last), and an answer after an invitation still reaches the referral waiting for one.
All four services over real HTTP, NATS, database and the development SMS provider."""

from typing import Any

from conftest import System, token
from support.outreach import eventually_get, text_back, texts

PHONE = "+14155550177"


async def sms_family(system: System, **overrides: Any) -> dict[str, Any]:
    return await system.register_family(**({
        "school_id": "roosevelt-ms", "preferred_language": "en", "phone": PHONE,
        "preferred_channel": "sms", "sms_consent": True} | overrides))


async def referral_texted(system: System, family: dict[str, Any], need: str) -> dict[str, Any]:
    """Open a referral and wait for its text, so the next one is requested after it."""
    before = len(texts(system))
    referral = await system.open_referral(family, need=need, urgency="urgent")
    await system.eventually(lambda: _true(len(texts(system)) > before), what=f"{need} text")
    return referral


async def outreach_of(system: System, family: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows = (await system.http.get(f"/api/v1/families/{family['id']}/outreach",
                                  params={"district_id": "d001"})).json()
    return {o["referral_id"]: o for o in rows}


async def notes(system: System, family: dict[str, Any]) -> dict[str | None, list[str]]:
    log = (await system.http.get(f"/api/v1/families/{family['id']}/contacts",
                                 params={"district_id": "d001"})).json()
    by_referral: dict[str | None, list[str]] = {}
    for entry in log:
        by_referral.setdefault(entry["referral_id"], []).append(entry["note"])
    return by_referral


async def test_each_reply_code_reaches_its_own_referral(outreach: System) -> None:
    await outreach.register_partner(needs=["tutoring", "mental_health", "food"], languages=["en"],
                                    schools=["roosevelt-ms"], capacity=3)
    family = await sms_family(outreach)
    tutoring = await referral_texted(outreach, family, "tutoring")
    counseling = await referral_texted(outreach, family, "mental_health")
    food = await referral_texted(outreach, family, "food")
    first, second, third = (t["body"] for t in texts(outreach))
    assert "start your text with" not in first and "in touch" in first  # alone: as before
    assert "start your text with 2." in second and "start your text with 3." in third

    # The counseling referral's answer, though the food one was written to last.
    await text_back(outreach, PHONE, "2 Yes please, after 3pm")
    await outreach.wait_status(counseling["id"], "family_contacted")
    await text_back(outreach, PHONE, "#3: we need it")
    await outreach.wait_status(food["id"], "family_contacted")
    assert (await outreach.referral(tutoring["id"]))["status"] == "matched"

    # One left open: an answer without a code is its answer, word for word.
    await text_back(outreach, PHONE, "3 kids, mornings are best")
    await outreach.wait_status(tutoring["id"], "family_contacted")
    assert await notes(outreach, family) == {
        counseling["id"]: ["Yes please, after 3pm"], food["id"]: ["we need it"],
        tutoring["id"]: ["3 kids, mornings are best"]}
    assert {o["status"] for o in (await outreach_of(outreach, family)).values()} == {"contacted"}


async def test_a_reply_naming_no_referral_is_held_until_a_coordinator_assigns_it(
        outreach: System) -> None:
    """Two families share one phone (a grandmother's), each with a referral open."""
    await outreach.register_partner(needs=["tutoring", "food"], languages=["en"],
                                    schools=["roosevelt-ms"], capacity=2)
    grandchildren = await sms_family(outreach, name="Ana Lopez")
    cousins = await sms_family(outreach, name="Luis Lopez")
    tutoring = await referral_texted(outreach, grandchildren, "tutoring")
    food = await referral_texted(outreach, cousins, "food")
    assert "start your text with 2." in texts(outreach)[1]["body"]

    await text_back(outreach, PHONE, "Yes, call me tomorrow")
    [held] = await eventually_get(outreach, "/api/v1/unassigned-replies",
                                  lambda rows: len(rows) == 1, "the reply held")
    assert held["text"] == "Yes, call me tomorrow" and held["school_id"] == "roosevelt-ms"
    assert [(c["referral_id"], c["reply_code"]) for c in held["candidates"]] == [
        (food["id"], "2"), (tutoring["id"], "1")]  # newest first
    for referral in (tutoring, food):  # nothing applied, to either family
        assert (await outreach.referral(referral["id"]))["status"] == "matched"

    path = f"/api/v1/unassigned-replies/{held['id']}/assign"
    stranger = await outreach.http.post(path, json={"district_id": "d001",
                                                    "outreach_id": "not-a-candidate"})
    assert stranger.status_code == 422 and "outreach_id" in stranger.text
    other_school = {"Authorization": "Bearer " + token(outreach.settings, "coordinator", "d001",
                                                       ("lincoln-es",))}
    hidden = await outreach.http.get("/api/v1/unassigned-replies", headers=other_school,
                                     params={"district_id": "d001"})
    assert hidden.status_code == 200 and hidden.json() == []

    target = held["candidates"][1]["outreach_id"]  # the coordinator called: it was tutoring
    coordinator = {"Authorization": "Bearer " + token(outreach.settings, "coordinator", "d001",
                                                      ("roosevelt-ms",))}
    assigned = await outreach.http.post(path, headers=coordinator,
                                        json={"district_id": "d001", "outreach_id": target})
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["status"] == "assigned" and assigned.json()["outreach_id"] == target
    await outreach.wait_status(tutoring["id"], "family_contacted")
    assert await notes(outreach, grandchildren) == {tutoring["id"]: ["Yes, call me tomorrow"]}
    assert await notes(outreach, cousins) == {}
    assert (await outreach.referral(food["id"]))["status"] == "matched"

    again = await outreach.http.post(path, json={"district_id": "d001", "outreach_id": target})
    assert again.status_code == 200  # a retried command
    elsewhere = await outreach.http.post(path, json={
        "district_id": "d001", "outreach_id": held["candidates"][0]["outreach_id"]})
    assert elsewhere.status_code == 409
    assert await notes(outreach, grandchildren) == {tutoring["id"]: ["Yes, call me tomorrow"]}
    left = await outreach.http.get("/api/v1/unassigned-replies", params={"district_id": "d001"})
    assert left.json() == []


async def test_an_answer_after_an_invitation_reaches_the_waiting_referral(
        outreach: System) -> None:
    await outreach.register_partner(needs=["tutoring"], languages=["en"],
                                    schools=["roosevelt-ms"])
    family = await sms_family(outreach)
    referral = await referral_texted(outreach, family, "tutoring")
    event = (await outreach.http.post("/api/v1/family-events", json={
        "district_id": "d001", "school_id": "roosevelt-ms", "title": "Family Math Night",
        "starts_at": "2026-12-03T02:00:00Z", "place": "Library"})).json()
    await outreach.http.post(f"/api/v1/family-events/{event['id']}/invitations",
                             json={"district_id": "d001"})
    await outreach.eventually(lambda: _true(len(texts(outreach)) == 2), what="the invitation")

    await text_back(outreach, PHONE, "yes")  # the RSVP the invitation asked for
    await eventually_get(outreach, f"/api/v1/family-events/{event['id']}",
                         lambda e: e["yes"] == 1, "the RSVP")
    await text_back(outreach, PHONE, "Please call me about the tutor")
    await outreach.wait_status(referral["id"], "family_contacted")
    assert (await notes(outreach, family))[referral["id"]] == ["Please call me about the tutor"]


async def _true(value: Any) -> Any:
    return value
