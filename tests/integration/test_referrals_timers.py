"""Follow-up timers against a real database (SQLite and PostgreSQL), without the broker: random
interleavings of clock jumps, progress and scans by one or two copies of the service; every
timer due fires, and fires once."""

import asyncio
import os
import tempfile
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from support.clock import FakeClock

from contracts.events import (
    PartnerMatched,
    ReferralAccepted,
    ReferralClosed,
    ReferralInService,
)
from contracts.taxonomy import Consent, Need, Outcome, Urgency
from runtime.districts import load_districts
from runtime.service import ServiceRuntime
from runtime.settings import DEFAULT_DISTRICTS_FILE, Settings
from services.referrals.follow_up import fire_due, refresh_metrics
from services.referrals.lifecycle import (
    OPEN,
    Accepted,
    Closed,
    InService,
    Matched,
    Status,
    replay,
)
from services.referrals.metrics import REFERRALS_OPEN, REFERRALS_OVERDUE
from services.referrals.referrals import (
    Desk,
    command,
    open_referral,
    restart_follow_up,
    state_of,
)
from services.referrals.tables import Base, Referral, TimelineEntry

DISTRICTS = load_districts(DEFAULT_DISTRICTS_FILE)
PG_URL = os.environ.get("ENSEMBLE_TEST_POSTGRES_URL")


def progress_steps(referral: Referral, clock: FakeClock) -> list[tuple[Any, Any]]:
    rid = referral.id
    return [
        (Matched("p1", 1), PartnerMatched(
            referral_id=rid, family_id=referral.family_id, partner_id="p1", service_id="s1",
            partner_name="Clinic", need=Need.dental, urgency=referral.urgency, score=1.0,
            reasons=["test"], attempt=1)),
        (Accepted("p1"), ReferralAccepted(referral_id=rid, partner_id="p1")),
        (InService("p1"), ReferralInService(referral_id=rid, partner_id="p1")),
        (Closed(Outcome.services_received), ReferralClosed(
            referral_id=rid, outcome=Outcome.services_received, closed_at=clock())),
    ]


class Copies:
    """Two runtimes of the referrals service on one database, as two processes would be."""

    def __init__(self, backend: str, clock: FakeClock) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.prefix = f"p{uuid.uuid4().hex[:10]}"
        extra: dict[str, Any] = {}
        if backend == "postgres":
            extra = {"referrals_database_url": PG_URL, "database_schema_prefix": self.prefix}
        self.settings = Settings(data_dir=Path(self.dir.name), **extra)
        self.runtimes = [ServiceRuntime("referrals", self.settings, Base.metadata, DISTRICTS)
                         for _ in range(2)]
        self.desk = Desk(DISTRICTS, clock)

    async def __aenter__(self) -> "Copies":
        await self.runtimes[0].db.create_schema()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.settings.referrals_database_url:
            async with self.runtimes[0].db.engine.begin() as conn:
                from sqlalchemy import text
                await conn.execute(text(f'DROP SCHEMA "{self.prefix}_referrals" CASCADE'))
        for rt in self.runtimes:
            await rt.db.dispose()
        self.dir.cleanup()


async def open_some(copies: Copies, urgencies: list[Urgency]) -> list[str]:
    ids = []
    async with copies.runtimes[0].unit_of_work() as uow:
        for i, urgency in enumerate(urgencies):
            referral = await open_referral(
                uow, copies.desk, district_id="d001", school_id="lincoln-es",
                student_ref=f"s{i}", family_id=f"f{i}", need=Need.dental, urgency=urgency,
                consent=Consent.given, grade=None, note=None, idempotency_key=None,
                actor="coordinator:test")
            ids.append(referral.id)
    return ids


async def timelines(rt: ServiceRuntime) -> dict[str, list[str]]:
    async with rt.unit_of_work() as uow:
        rows = (await uow.session.execute(
            select(TimelineEntry.referral_id, TimelineEntry.event_type)
            .order_by(TimelineEntry.seq))).all()
    out: dict[str, list[str]] = {}
    for referral_id, event_type in rows:
        out.setdefault(referral_id, []).append(event_type)
    return out


async def outbox_types(rt: ServiceRuntime) -> Counter[str]:
    outbox = rt.tables.outbox
    async with rt.unit_of_work() as uow:
        types = (await uow.session.scalars(select(outbox.c.event_type))).all()
    return Counter(t.split(".")[3] for t in types)


OPS = st.lists(st.one_of(
    st.tuples(st.just("advance"), st.sampled_from([10, 45, 61, 180, 60 * 24, 60 * 24 * 4])),
    st.tuples(st.just("scan"), st.sampled_from([1, 2])),
    st.tuples(st.just("progress"), st.integers(0, 2)),
), min_size=1, max_size=25)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(
    not PG_URL, reason="PostgreSQL: set ENSEMBLE_TEST_POSTGRES_URL"))]


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(urgencies=st.lists(st.sampled_from(list(Urgency)), min_size=3, max_size=3), ops=OPS)
def test_every_due_timer_fires_once_per_stretch_without_progress(
    backend: str, urgencies: list[Urgency], ops: list[tuple[str, int]]
) -> None:
    asyncio.run(_scenario(backend, urgencies, ops))


async def _scenario(backend: str, urgencies: list[Urgency], ops: list[tuple[str, int]]) -> None:
    # A Tuesday morning in the district: the calendar matters, the real time does not.
    clock = FakeClock(datetime(2026, 11, 17, 17, 0, tzinfo=UTC))
    async with Copies(backend, clock) as copies:
        rt = copies.runtimes[0]
        ids = await open_some(copies, urgencies)
        done = [0] * len(ids)
        for op, arg in [*ops, ("scan", 2)]:
            if op == "advance":
                clock.advance(minutes=arg)
            elif op == "progress":
                async with rt.unit_of_work() as uow:
                    referral = await uow.session.get(Referral, ids[arg])
                    assert referral is not None
                    steps = progress_steps(referral, clock)
                    if done[arg] < len(steps):
                        fact, event = steps[done[arg]]
                        assert command(uow, copies.desk, referral, fact, event, "test")
                        done[arg] += 1
            else:
                await asyncio.gather(*(fire_due(r, copies.desk) for r in copies.runtimes[:arg]))
                async with rt.unit_of_work() as uow:  # nothing due is left unfired
                    late = (await uow.session.scalars(select(Referral.id).where(
                        Referral.follow_up_due_at <= clock(),
                        Referral.status.in_([s.value for s in OPEN])))).all()
                assert late == []
        seen = await timelines(rt)
        fired: Counter[str] = Counter()
        for referral_id in ids:
            stretch: list[str] = []
            for event_type in seen[referral_id][1:]:
                if event_type in ("FollowUpDue", "ReferralEscalated"):
                    stretch.append(event_type)
                    fired[event_type] += 1
                else:  # progress: a new stretch begins
                    stretch = []
                assert stretch in ([], ["FollowUpDue"], ["FollowUpDue", "ReferralEscalated"])
        sent = await outbox_types(rt)
        assert sent["follow_up_due"] == fired["FollowUpDue"]
        # The stored state is what replaying the timeline gives.
        async with rt.unit_of_work() as uow:
            entries = (await uow.session.execute(
                select(TimelineEntry.referral_id, TimelineEntry.event_type, TimelineEntry.data)
                .order_by(TimelineEntry.seq))).all()
            for referral in (await uow.session.scalars(select(Referral))).all():
                mine = [(t, d) for r, t, d in entries if r == referral.id]
                assert replay(mine) == state_of(referral)
        assert sent["escalated"] == fired["ReferralEscalated"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_windows_escalation_unreachable_and_gauges(backend: str) -> None:
    clock = FakeClock(datetime(2026, 11, 17, 17, 0, tzinfo=UTC))  # Tue 09:00 in Los Angeles
    async with Copies(backend, clock) as copies:
        rt = copies.runtimes[0]
        crisis, urgent, routine = await open_some(
            copies, [Urgency.crisis, Urgency.urgent, Urgency.routine])
        async with rt.unit_of_work() as uow:
            due = {r.id: r.follow_up_due_at for r in (await uow.session.scalars(
                select(Referral))).all()}
        assert due[crisis] == clock() + timedelta(hours=1)
        assert due[urgent] == clock() + timedelta(days=1)
        assert due[routine] == clock() + timedelta(days=7)  # 5 school days span a weekend

        clock.advance(minutes=59)
        assert await fire_due(rt, copies.desk) == 0
        clock.advance(minutes=2)
        assert await fire_due(rt, copies.desk) == 1
        assert await fire_due(rt, copies.desk) == 0
        clock.advance(hours=1)
        assert await fire_due(rt, copies.desk) == 1  # the crisis one escalates
        seen = await timelines(rt)
        assert seen[crisis] == ["ReferralOpened", "FollowUpDue", "ReferralEscalated"]
        clock.advance(days=30)
        # Both windows passed while nobody looked (a long outage): due, then escalated at once.
        assert await fire_due(rt, copies.desk) == 2
        assert await fire_due(rt, copies.desk) == 0
        seen = await timelines(rt)
        assert seen[urgent] == seen[routine] == seen[crisis]

        # A family engagement could not reach is due at once, even mid-window.
        async with rt.unit_of_work() as uow:
            referral = await uow.session.get(Referral, routine)
            assert referral is not None
            fact, event = progress_steps(referral, clock)[0]
            command(uow, copies.desk, referral, fact, event, "test")
        assert await fire_due(rt, copies.desk) == 0
        async with rt.unit_of_work() as uow:
            referral = await uow.session.get(Referral, routine)
            assert referral is not None
            restart_follow_up(copies.desk, referral, clock(), reason="family_unreachable")
        assert await fire_due(rt, copies.desk) == 1
        outbox = rt.tables.outbox
        async with rt.unit_of_work() as uow:
            payload = (await uow.session.scalars(select(outbox.c.payload).order_by(
                outbox.c.seq.desc()).limit(1))).one()
        assert b'"reason":"family_unreachable"' in payload and b'"status":"matched"' in payload

        await refresh_metrics(rt, copies.desk)
        assert REFERRALS_OVERDUE.labels("d001")._value.get() == 3
        assert REFERRALS_OPEN.labels("d001", Status.matched, Urgency.routine)._value.get() == 1
        assert REFERRALS_OPEN.labels("d001", Status.opened, Urgency.crisis)._value.get() == 1
