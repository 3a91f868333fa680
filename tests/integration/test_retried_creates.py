"""A create a client retries (a timeout, a double click on the console, a SIS job run twice)
with the same Idempotency-Key makes one family, partner, family event or webhook endpoint, not
two: the retry is
answered with what the first made (200, Idempotent-Replay), also when both race; without a key
each request creates. Real HTTP, NATS and database."""

import asyncio
import json
import uuid
from typing import Any

import nats
import pytest
from conftest import System, token
from support.streams import read_stream

FAMILY = {"district_id": "d001", "school_id": "lincoln-es", "name": "Maria Garcia",
          "preferred_language": "es", "email": "garcia@example.org",
          "preferred_channel": "email"}
PARTNER = {"district_id": "d001", "name": "Smile Bright Dental", "needs": ["dental"],
           "schools": ["lincoln-es"], "languages": ["en"], "capacity": 2}
EVENT = {"district_id": "d001", "school_id": "lincoln-es", "title": "Family night",
         "starts_at": "2027-01-20T18:00:00-08:00", "place": "Library"}
ENDPOINT = {"district_id": "d001", "url": "https://hooks.invalid/ensemble"}
CREATES = [("/api/v1/families", FAMILY), ("/api/v1/partners", PARTNER),
           ("/api/v1/family-events", EVENT), ("/api/v1/webhooks/endpoints", ENDPOINT)]


async def _post(system: System, path: str, body: dict[str, Any], key: str | None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return await system.http.post(path, json=body, headers=headers)


@pytest.mark.parametrize(("path", "body"), CREATES)
async def test_a_retry_with_the_same_key_answers_what_the_first_made(
        system: System, path: str, body: dict[str, Any]) -> None:
    key = f"retry-{uuid.uuid4().hex}"
    first = await _post(system, path, body, key)
    assert first.status_code == 201 and "Idempotent-Replay" not in first.headers, first.text
    again = await _post(system, path, body, key)
    assert again.status_code == 200 and again.headers["Idempotent-Replay"] == "true"
    assert again.json() == first.json()
    # Two copies racing with a new key: one creates, the other answers what it made.
    racing = f"race-{uuid.uuid4().hex}"
    one, two = await asyncio.gather(_post(system, path, body, racing),
                                    _post(system, path, body, racing))
    assert sorted([one.status_code, two.status_code]) == [200, 201], (one.text, two.text)
    assert one.json()["id"] == two.json()["id"] != first.json()["id"]
    # Without a key, each request is a new one.
    plain = [await _post(system, path, body, None) for _ in range(2)]
    assert [r.status_code for r in plain] == [201, 201]
    assert len({r.json()["id"] for r in plain} | {first.json()["id"]}) == 3


async def test_a_retried_family_registration_is_announced_once(system: System) -> None:
    key = f"retry-{uuid.uuid4().hex}"
    made = (await _post(system, "/api/v1/families", FAMILY, key)).json()
    assert (await _post(system, "/api/v1/families", FAMILY, key)).status_code == 200

    async def registered() -> list[dict[str, Any]] | None:
        nc = await nats.connect(system.settings.nats_url)
        try:
            messages = await read_stream(nc.jetstream(), "ENSEMBLE_ENGAGEMENT")
        finally:
            await nc.close()
        found = [e for e in map(json.loads, (m.data for m in messages))
                 if e["type"].endswith(".family_registered.v1")
                 and e["data"]["family_id"] == made["id"]]
        return found or None

    await system.eventually(registered, what="FamilyRegistered published")
    await asyncio.sleep(0.5)  # the relay publishes right after the commit
    assert len(await registered() or []) == 1


async def test_one_key_from_two_callers_or_districts_makes_two(system: System) -> None:
    """The key is the caller's own: the same string from another person or district is
    another request."""
    key = f"shared-{uuid.uuid4().hex}"
    admin = await _post(system, "/api/v1/families", FAMILY, key)
    coordinator = await system.http.post("/api/v1/families", json=FAMILY, headers={
        "Idempotency-Key": key, "Authorization": "Bearer " + token(
            system.settings, "coordinator", "d001", ("lincoln-es",))})
    elsewhere = await system.http.post(
        "/api/v1/families", json=FAMILY | {"district_id": "d002", "school_id": "lakeview-hs"},
        headers={"Idempotency-Key": key,
                 "Authorization": "Bearer " + token(system.settings, "district_admin", "d002")})
    made = [admin, coordinator, elsewhere]
    assert [r.status_code for r in made] == [201, 201, 201], [r.text for r in made]
    assert len({r.json()["id"] for r in made}) == 3
