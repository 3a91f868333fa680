"""What the dispatcher records of each attempt's answer, through the delivery's lifecycle: a 2xx
delivers it, a failure retries it after a back-off until the last attempt parks it in its
endpoint's dead letters, and an answer for a delivery no longer pending changes nothing. Real
tables on in-memory SQLite, no HTTP, no NATS."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from support.uow import HandlerBench

from runtime.db import Database
from runtime.settings import Settings
from services.webhooks.dispatch import Attempt, Dispatcher, Result
from services.webhooks.settings import webhooks_settings
from services.webhooks.tables import Base, DeadLetter, Delivery, Endpoint

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
NAME = "webhooks-attempts-test"  # its own metrics label


@dataclass
class Runtime:
    """What the dispatcher uses of its runtime to record answers: the database and a name."""

    db: Database
    name: str = NAME


@pytest.fixture
async def dispatcher() -> AsyncIterator[Dispatcher]:
    async with HandlerBench(Base.metadata) as bench:
        config = webhooks_settings(Settings(), webhooks_max_attempts=3)
        async with bench.db.transaction() as session:
            session.add(Endpoint(id="e1", district_id="d001", url="https://hooks.example/e1",
                                 secret="whsec_0123456789abcdef", event_types=[],
                                 description=None, created_at=NOW))
            for n in range(1, 4):
                session.add(Delivery(id=f"d{n}", endpoint_id="e1", district_id="d001",
                                     event_id=f"ev{n}", event_type="t", payload=b"{}",
                                     status="pending", attempts=0, next_attempt_at=NOW,
                                     created_at=NOW))
        yield Dispatcher(cast(Any, Runtime(bench.db)), config, clock=lambda: NOW)


def attempt(delivery_id: str, n: int) -> Attempt:
    return Attempt(delivery_id, n, "https://hooks.example/e1", "whsec_0123456789abcdef",
                   "ev", "t", b"{}")


async def rows(d: Dispatcher) -> dict[str, Delivery]:
    async with d.rt.db.transaction() as session:
        return {r.id: r for r in (await session.scalars(select(Delivery))).all()}


async def letters(d: Dispatcher) -> list[DeadLetter]:
    async with d.rt.db.transaction() as session:
        return list((await session.scalars(select(DeadLetter))).all())


def counted(result: str) -> float:
    return REGISTRY.get_sample_value("ensemble_webhook_deliveries_total",
                                     {"service": NAME, "result": result}) or 0.0


async def test_each_answer_moves_its_delivery_as_the_lifecycle_says(
        dispatcher: Dispatcher) -> None:
    before = {r: counted(r) for r in ("delivered", "retried", "dead_lettered")}
    await dispatcher._record([
        (attempt("d1", 1), Result(True, 200)),
        (attempt("d2", 1), Result(False, 500, "HTTP 500")),
        (attempt("d3", 3), Result(False, 500, "HTTP 500")),  # the last of three
    ])
    d = await rows(dispatcher)
    assert (d["d1"].status, d["d1"].attempts, d["d1"].delivered_at) == ("delivered", 1, NOW)
    assert (d["d2"].status, d["d2"].attempts, d["d2"].last_error) == ("pending", 1, "HTTP 500")
    assert d["d2"].next_attempt_at > NOW  # retried after a back-off
    assert (d["d3"].status, d["d3"].attempts, d["d3"].last_status) == ("dead", 3, 500)
    [letter] = await letters(dispatcher)
    assert (letter.delivery_id, letter.attempts, letter.dead_at) == ("d3", 3, NOW)
    assert {r: counted(r) - before[r] for r in before} == {
        "delivered": 1, "retried": 1, "dead_lettered": 1}
    assert REGISTRY.get_sample_value("ensemble_webhook_backlog", {"service": NAME}) == 1


async def test_a_refused_address_parks_the_delivery_at_its_first_attempt(
        dispatcher: Dispatcher) -> None:
    await dispatcher._record([(attempt("d1", 1), Result(False, error="refused", final=True))])
    assert (await rows(dispatcher))["d1"].status == "dead"
    assert [letter.delivery_id for letter in await letters(dispatcher)] == ["d1"]


async def test_an_answer_for_a_delivery_no_longer_pending_changes_nothing(
        dispatcher: Dispatcher) -> None:
    await dispatcher._record([(attempt("d1", 1), Result(True, 200))])
    await dispatcher._record([(attempt("d1", 2), Result(False, 500, "HTTP 500")),
                              (attempt("gone", 1), Result(True, 200))])  # endpoint deleted
    d1 = (await rows(dispatcher))["d1"]
    assert (d1.status, d1.attempts, d1.last_error, d1.delivered_at) == (
        "delivered", 1, None, NOW)
    assert await letters(dispatcher) == []
