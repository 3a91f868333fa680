"""A district-wide announcement fans out in the background: progress over HTTP and in metrics,
each family in its language on its channel, families without consent counted, not messaged."""

import test_outreach_support as support
from conftest import System
from test_outreach_support import eventually_get, seed_families, texts

outreach, engagement_config = support.outreach, support.engagement_config  # fixtures


async def test_a_closure_reaches_every_family_of_the_district(outreach: System) -> None:
    await seed_families(outreach, 900, "lincoln-es", sms_every=2, unreachable_every=50)
    await seed_families(outreach, 600, "roosevelt-ms", sms_every=4)
    made = await outreach.http.post("/api/v1/announcements", json={
        "district_id": "d001", "title": "Schools closed tomorrow",
        "body": "All schools are closed on Friday because of the storm.", "urgency": "crisis"})
    assert made.status_code == 202, made.text
    announcement = made.json()
    assert announcement["status"] == "fanning_out"

    done = await eventually_get(outreach, f"/api/v1/announcements/{announcement['id']}",
                                lambda a: a["status"] == "queued", "fan-out", timeout=60)
    assert done["families_targeted"] == 1500 - 18 and done["families_unreachable"] == 18
    assert done["chunks"] >= done["families_targeted"] // 200

    progress = await eventually_get(
        outreach, f"/api/v1/message-batches/{announcement['id']}",
        lambda p: p["done"] and p["total"] == 1482, "every message sent", timeout=120)
    sent = progress["by_channel"]
    assert sent["sms"] == len(texts(outreach)) == 450 + 150
    assert sent["email"] == len(outreach.inbox.messages) == 1482 - 600

    spanish = [t for t in texts(outreach) if "Escuela" in t["body"] or "Schools" in t["body"]]
    assert spanish  # each family's own language; English where a template is missing
    metrics = (await outreach.http.get("/metrics")).text
    assert 'ensemble_notifications_bulk_queued_total{kind="announcement"} ' in metrics
    assert 'ensemble_announcement_families_total{district="d001",result="queued"}' in metrics
