"""The 0003_erasure migrations' data-carrying case (issue 18's upgrade rule): databases made at
the baseline and holding a district's rows as the baseline release wrote them are upgraded to
head, on SQLite and PostgreSQL; nothing is lost, no family counts as erased, and the running
system can then erase a family and run its retention job on them."""

from datetime import timedelta
from typing import Any

import httpx
from conftest import Inbox, running, token
from sqlalchemy import MetaData, Table, insert, select
from support.waiting import eventually

from ensemble.system import build_services
from runtime.db import Database, utcnow
from runtime.migrations import base, current, head, upgrade
from runtime.settings import Settings

NOW = utcnow().replace(microsecond=0)
FAMILY = {"id": "fam-old", "district_id": "d001", "school_id": "lincoln-es",
          "name": "Odile Baseline", "preferred_language": "en", "phone": "+14155550111",
          "email": "odile@example.org", "preferred_channel": "email", "sms_consent": True,
          "email_consent": True, "sms_opted_out": False, "email_opted_out": False,
          "created_at": NOW}
MESSAGE = {"id": "msg-old", "idempotency_key": "out-old", "district_id": "d001",
           "school_id": "lincoln-es", "family_id": "fam-old", "outreach_id": "out-old",
           "correlation_id": "c-1", "kind": "partner_matched", "urgency": "routine",
           "language": "en", "channels": [], "email": "odile@example.org", "phone": None,
           "family_name": "Odile Baseline", "variables": {}, "token": "t" * 32,
           "status": "sent", "attempts": 1, "next_attempt_at": NOW, "fell_back": False,
           "created_at": NOW, "sent_at": NOW}
REFERRAL = {"id": "ref-old", "district_id": "d001", "school_id": "lincoln-es",
            "student_ref": "stu-old", "family_id": "fam-old", "need": "dental",
            "urgency": "routine", "consent": "given", "status": "closed",
            "outcome": "services_received", "note": "Odile's note", "opened_by": "c",
            "opened_at": NOW - timedelta(days=400), "updated_at": NOW,
            "closed_at": NOW - timedelta(days=399), "match_attempt": 1, "follow_up_stage": 0}
AT_BASELINE = {"engagement": ("families", FAMILY), "notifications": ("messages", MESSAGE),
               "referrals": ("referrals", REFERRAL)}


async def rows(db: Database, name: str) -> list[dict[str, Any]]:
    async with db.engine.connect() as conn:
        table = await conn.run_sync(lambda c: Table(name, MetaData(), autoload_with=c))
        return [dict(r._mapping) for r in (await conn.execute(select(table))).all()]


async def test_rows_written_at_the_baseline_are_kept_and_can_be_erased_after_the_upgrade(
        settings: Settings, smtp: tuple[Inbox, str]) -> None:
    dbs = {name: Database(settings.database_url(name), MetaData(),
                          settings.database_schema(name)) for name in AT_BASELINE}
    try:
        for name, (table_name, row) in AT_BASELINE.items():
            db = dbs[name]
            await upgrade(db, name, base(name))
            async with db.engine.begin() as conn:
                table = await conn.run_sync(
                    lambda c, t=table_name: Table(t, MetaData(), autoload_with=c))
                await conn.execute(insert(table), [row])
            before = await rows(db, table_name)
            assert head(name) != base(name)
            await upgrade(db, name)
            assert await current(db) == head(name)
            after = await rows(db, table_name)
            assert [{k: v for k, v in r.items() if k in row} for r in after] == [
                {k: v for k, v in r.items() if k in row} for r in before]
            assert await rows(db, "job_runs") == []
        [family] = await rows(dbs["engagement"], "families")
        assert (family["erased_at"], family["erased_by"]) == (None, None)

        services = build_services(settings)
        admin = {"Authorization": f"Bearer {token(settings, 'district_admin', 'd001')}"}
        async with running(settings, services) as url, \
                httpx.AsyncClient(base_url=url, timeout=10, headers=admin) as http:
            erased = await http.delete("/api/v1/families/fam-old", params={"district_id": "d001"})
            assert erased.status_code == 200, erased.text
            assert erased.json()["name"] == "" and erased.json()["erased_at"]

            async def erased_everywhere() -> bool:
                [referral] = await rows(dbs["referrals"], "referrals")
                [message] = await rows(dbs["notifications"], "messages")
                return (referral["note"], message["email"], message["family_name"]) == (
                    None, None, "")

            await eventually(erased_everywhere, "the old rows erased", 30)
    finally:
        for db in dbs.values():
            await db.dispose()
