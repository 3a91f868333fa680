"""A bulk invitation to thousands of families, and their RSVPs coming back by text, by email
reply and by link; attendance recorded after the event."""

import re
from typing import Any

from conftest import System
from support.outreach import eventually_get, seed_families, signed_post, texts

FAMILIES = 3000


async def test_invite_thousands_by_grade_and_collect_rsvps(outreach: System) -> None:
    ids = await seed_families(outreach, FAMILIES, sms_every=3, unreachable_every=100,
                              grades=(1, 2, 3))
    made = await outreach.http.post("/api/v1/family-events", json={
        "district_id": "d001", "school_id": "lincoln-es", "title": "Family Math Night",
        "starts_at": "2026-12-03T02:00:00Z", "place": "Lincoln Elementary cafeteria"})
    assert made.status_code == 201, made.text
    event = made.json()

    invited = await outreach.http.post(f"/api/v1/family-events/{event['id']}/invitations",
                                       json={"district_id": "d001", "grades": [1, 2]})
    assert invited.status_code == 200, invited.text
    result = invited.json()
    in_grades = [i for n, i in enumerate(ids) if n % 3 in (0, 1)]  # grades 1 and 2
    assert result["invited"] + result["unreachable"] == len(in_grades) == 2000
    assert result["unreachable"] == sum(1 for n in range(FAMILIES)
                                        if n % 3 in (0, 1) and n % 100 == 99)
    assert result["requests"] == -(-result["invited"] // 200)  # one bulk request a chunk

    progress = await eventually_get(
        outreach, f"/api/v1/message-batches/{event['id']}",
        lambda p: p["done"] and p["total"] == result["invited"], "every invitation sent",
        timeout=180)
    assert progress["by_status"].get("failed", 0) == 0
    again = await outreach.http.post(f"/api/v1/family-events/{event['id']}/invitations",
                                     json={"district_id": "d001", "grades": [1, 2]})
    assert again.json()["invited"] == 0 and again.json()["already_invited"] == 2000

    sent_texts = texts(outreach)
    assert all("Family Math Night" in t["body"] and "18:00" in t["body"] for t in sent_texts)
    # RSVPs: ten by text, ten by email reply, ten by the link in the email.
    for n, text in enumerate(sent_texts[:10]):
        response = await signed_post(outreach, "/api/v1/sms/inbound", {
            "MessageSid": f"SM{n:032d}", "From": text["to"], "To": text["from"],
            "Body": "Sí, vamos" if n % 2 == 0 else "No puedo"})
        assert response.status_code == 200
    mails = outreach.inbox.messages
    for mail in mails[:10]:
        reply = await outreach.http.post("/api/v1/email/inbound", json={
            "to": mail["Reply-To"].strip(), "from": mail["To"], "text": "Yes!\n\n> invite"})
        assert reply.status_code == 200, reply.text
    for mail in mails[10:20]:
        link = re.search(r"(/api/v1/rsvp/[^\s?]+)\?token=(\w+)", _text(mail))
        assert link, _text(mail)
        clicked = await outreach.http.post(link[1], params={"token": link[2], "response": "yes"})
        assert clicked.status_code == 200
    forged = await outreach.http.post(link[1], params={"token": "0" * 32, "response": "no"})
    assert forged.status_code == 404

    detail = await eventually_get(outreach, f"/api/v1/family-events/{event['id']}",
                                  lambda e: e["yes"] + e["no"] == 30, "30 RSVPs")
    assert (detail["yes"], detail["no"]) == (25, 5)
    rows = (await outreach.http.get(f"/api/v1/family-events/{event['id']}/invitations",
                                    params={"district_id": "d001", "limit": 5000})).json()
    by_via: dict[str, int] = {}
    for row in rows:
        if row["responded_via"]:
            by_via[row["responded_via"]] = by_via.get(row["responded_via"], 0) + 1
    assert by_via == {"sms": 10, "email": 10, "link": 10}

    came = [r["family_id"] for r in rows if r["response"] == "yes"][:7]
    recorded = await outreach.http.post(f"/api/v1/family-events/{event['id']}/attendance",
                                        json={"district_id": "d001", "family_ids": came})
    assert recorded.status_code == 200 and recorded.json()["attended"] == 7


def _text(mail: Any) -> str:
    return str(mail.get_payload(0).get_payload(decode=True).decode())
