"""Drive referrals through the whole loop over HTTP and account for every one of them.

The ledger registers partners, families (email or SMS) and referrals, then checks that
- every referral reached its end (SERVED_ENDS, or UNSERVED_ENDS for a need nobody serves),
- every family got exactly one message per outreach, counted where it lands (the SMTP server and
  the dev SMS store, by recipient); a repeated email with the same message key is a resend
  (the dispatcher is at-least-once across a crash) and is counted apart from real duplicates,
- no event was applied twice (no event type repeated in a referral's timeline beyond
  LEGAL_REPEATS; partners' reserved counts equal the referrals matched to them),
- nothing is left unacked (every durable consumer of every stream: no pending, no ack pending),
- the dead-letter stream holds exactly the poison the test sent.

What counts as "the end" lives in SERVED_ENDS / UNSERVED_ENDS and `referral_done`; how messages
are read lives in `Outreach`: adapt those when the loop's meaning changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import httpx
import nats

# --- what "done" means (one place) ------------------------------------------------------------

# A served referral is done once its family's message landed (SMTP server or SMS store) and the
# referral is matched or beyond: FamilyContacted now means "the family replied", which no family
# does in these tests, so "matched" with the message delivered is the end of the loop here.
SERVED_ENDS = frozenset({"matched", "family_contacted", "accepted", "in_service", "closed"})
UNSERVED_ENDS = frozenset({"no_partner"})
# Event types that may legally appear more than once in one referral's timeline.
LEGAL_REPEATS: frozenset[str] = frozenset()

SERVED_NEED = "dental"
UNSERVED_NEED = "vision"  # no partner is registered for it: NoPartnerAvailable
SCHOOLS = ("lincoln-es", "roosevelt-ms")
LANGUAGES = ("es", "en", "vi")
AREA_CODES = ("415", "628", "650", "510", "408", "925", "707", "209", "559", "661")


def referral_done(case: Case, detail: dict[str, Any], delivered: set[str]) -> bool:
    """`delivered`: recipients (emails, phones) whose message has landed."""
    if not case.served:
        return detail.get("status") in UNSERVED_ENDS
    return detail.get("status") in SERVED_ENDS and case.recipient in delivered


# --- HTTP with retries across copies ----------------------------------------------------------


class Api:
    """Requests to a service, retried on connection errors and 5xx across its live copies
    (a copy killed mid-request is the point of these tests). Sent with aiohttp, answered as
    httpx responses: httpx's pool costs CPU per open connection per request, and this client
    shares the machine's two cores with the services a benchmark measures."""

    def __init__(self, urls: Callable[[str], list[str]], headers: dict[str, str],
                 timeout: float = 60, give_up_after: float = 180) -> None:
        self.urls = urls
        self.headers = headers
        self.timeout = timeout
        self.session: aiohttp.ClientSession | None = None  # made in the running loop
        self.give_up_after = give_up_after
        self.retries = 0

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                headers=self.headers, timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=64))
        async with self.session.request(method, url, **kwargs) as answer:
            content = await answer.read()
            return httpx.Response(answer.status, headers=list(answer.headers.items()),
                                  content=content, request=httpx.Request(method, url))

    async def request(
        self, service: str, method: str, path: str, *,
        retry_if: Callable[[httpx.Response], bool] | None = None, **kwargs: Any,
    ) -> httpx.Response:
        deadline = time.monotonic() + self.give_up_after
        delay = 0.1
        last: str = ""
        while True:
            for base in self.urls(service):
                try:
                    response = await self._send(method, base + path, **kwargs)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = f"{type(exc).__name__} from {base}"
                else:
                    if response.status_code < 500 and not (retry_if and retry_if(response)):
                        return response
                    last = f"HTTP {response.status_code} from {base}: {response.text[:200]}"
                self.retries += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {service}{path} kept failing: {last}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


# --- the cases --------------------------------------------------------------------------------


@dataclass
class Case:
    index: int
    served: bool
    channel: str  # email | sms
    email: str
    phone: str
    school: str
    language: str
    family_id: str | None = None
    referral_id: str | None = None
    opened_at: float | None = None  # monotonic, client side

    @property
    def recipient(self) -> str:
        return self.phone if self.channel == "sms" else self.email


def make_cases(count: int, run: str | None = None, unserved_every: int = 10,
               sms_every: int = 4, start: int = 0) -> list[Case]:
    run = run or uuid.uuid4().hex[:6]
    cases = []
    for i in range(start, start + count):
        # Unique for any index below 70 million: area by 10,000s, exchange by 100,000s.
        area = AREA_CODES[(i // 10000) % len(AREA_CODES)]
        phone = f"+1{area}{200 + (i // 100000) % 700}{i % 10000:04d}"
        cases.append(Case(
            index=i,
            served=(i % unserved_every) != unserved_every - 1,
            channel="sms" if i % sms_every == 1 else "email",
            email=f"family-{run}-{i}@example.org",
            phone=phone,
            school=SCHOOLS[i % len(SCHOOLS)],
            language=LANGUAGES[i % len(LANGUAGES)],
        ))
    return cases


# --- what landed at the SMTP server and the SMS provider ---------------------------------------


@dataclass(frozen=True)
class Delivered:
    channel: str
    recipient: str
    key: str  # the notification's idempotency key: equal keys are resends of one message


def message_key(message_id: str | None) -> str:
    """The idempotency key inside a Message-ID. make_msgid(idstring=key) gives
    <time.pid.random.key@domain>; a stable <key@domain> works too."""
    local = (message_id or "").strip().strip("<>").split("@")[0]
    return local.rsplit(".", 1)[-1]


@dataclass
class Outreach:
    """Where messages are counted: callables so in-process and process systems both fit."""

    emails: Callable[[], Sequence[Any]]  # email.message.Message objects, append-only
    sms: Callable[[], Sequence[dict[str, Any]]]  # dev SMS store records
    _emails: list[Delivered] = field(default_factory=list)

    def delivered(self) -> list[Delivered]:
        # Emails only grow: parse the new ones (a 100,000-referral run asks many times).
        self._emails += [Delivered("email", str(m["To"]), message_key(m["Message-ID"]))
                         for m in self.emails()[len(self._emails):]]
        out = list(self._emails)
        out += [Delivered("sms", str(r["to"]), str(r.get("idempotency_token") or r["sid"]))
                for r in self.sms()]
        return out


# --- NATS accounting ---------------------------------------------------------------------------


@dataclass
class ConsumerState:
    stream: str
    durable: str
    pending: int
    ack_pending: int
    redelivered: int


async def consumer_states(nats_url: str) -> list[ConsumerState]:
    nc = await nats.connect(nats_url.split(","), connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream(timeout=10)
        states = []
        for stream in await js.streams_info():
            for info in await js.consumers_info(stream.config.name):
                states.append(ConsumerState(stream.config.name, info.name or "?",
                                            info.num_pending or 0, info.num_ack_pending or 0,
                                            info.num_redelivered or 0))
        return states
    finally:
        await nc.close()


async def dead_letters(nats_url: str) -> list[dict[str, str]]:
    """Every parked message's headers (reason, consumer, original subject)."""
    nc = await nats.connect(nats_url.split(","), connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info("ENSEMBLE_DLQ")
        count = info.state.messages
        if not count:
            return []
        sub = await js.subscribe("ensemble_dlq.>", stream="ENSEMBLE_DLQ", ordered_consumer=True)
        letters = []
        with contextlib.suppress(TimeoutError):
            while len(letters) < count:
                msg = await sub.next_msg(timeout=5)
                letters.append({**(msg.headers or {}), "subject": msg.subject})
        await sub.unsubscribe()
        return letters
    finally:
        await nc.close()


# --- watching the bus ---------------------------------------------------------------------------


class EventWatch:
    """Which referrals partners has answered, seen as the public events pass on NATS: a plain
    subscription, no durable and no request to a service, so a benchmark can tell when its
    referrals are done without loading the services it measures."""

    ENDS = {"matched": True, "no_partner_available": False}  # event → served?

    def __init__(self) -> None:
        self.answered: dict[str, bool] = {}
        self.nc: Any = None

    async def start(self, nats_url: str, district: str) -> None:
        self.nc = await nats.connect(nats_url.split(","), connect_timeout=5)
        await self.nc.subscribe(f"ensemble.{district}.partners.>", cb=self._on)

    async def _on(self, msg: Any) -> None:
        name = msg.subject.rsplit(".", 1)[-1]
        if name in self.ENDS:
            referral_id = json.loads(msg.data).get("data", {}).get("referral_id")
            if referral_id:
                self.answered[referral_id] = self.ENDS[name]

    def done(self, case: Case, delivered: set[str]) -> bool:
        answer = self.answered.get(case.referral_id or "")
        if answer is None or answer != case.served:
            return False
        return not case.served or case.recipient in delivered

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


# --- the ledger --------------------------------------------------------------------------------


@dataclass
class Report:
    referrals: int
    served: int
    not_done: list[tuple[str, str]] = field(default_factory=list)
    missing_messages: list[str] = field(default_factory=list)
    wrong_channel: list[str] = field(default_factory=list)
    resends: int = 0  # extra copies of one message (same key): at-least-once after a crash
    resent_recipients: list[str] = field(default_factory=list)
    distinct_duplicates: list[str] = field(default_factory=list)  # two messages, two keys
    stray_messages: list[str] = field(default_factory=list)  # to nobody we expected
    repeated_events: list[tuple[str, str, int]] = field(default_factory=list)
    reserved_mismatch: list[str] = field(default_factory=list)
    unacked: list[ConsumerState] = field(default_factory=list)
    dead_letters: int = 0
    expected_dead_letters: int = 0
    emails: int = 0
    sms: int = 0
    hops_ms: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    http_retries: int = 0

    def problems(self, allow_resends: bool = False) -> list[str]:
        out = []
        if self.not_done:
            out.append(f"{len(self.not_done)} referrals not at their end: {self.not_done[:5]}")
        if self.missing_messages:
            out.append(f"{len(self.missing_messages)} families got no message: "
                       f"{self.missing_messages[:5]}")
        if self.wrong_channel:
            out.append(f"messages on the wrong channel: {self.wrong_channel[:5]}")
        if self.distinct_duplicates:
            out.append(f"families with two different messages for one outreach: "
                       f"{self.distinct_duplicates[:5]}")
        if self.stray_messages:
            out.append(f"messages to unexpected recipients: {self.stray_messages[:5]}")
        if self.resends and not allow_resends:
            out.append(f"{self.resends} resent emails (same key) where no crash explains them: "
                       f"{self.resent_recipients[:5]}")
        if self.repeated_events:
            out.append(f"events applied twice: {self.repeated_events[:5]}")
        if self.reserved_mismatch:
            out.append(f"partner capacity out of step: {self.reserved_mismatch}")
        if self.unacked:
            out.append(f"consumers not drained: {self.unacked}")
        if self.dead_letters != self.expected_dead_letters:
            out.append(f"{self.dead_letters} dead letters, expected {self.expected_dead_letters}")
        return out

    def percentiles(self) -> dict[str, tuple[float, float]]:
        return {hop: (percentile(v, 50), percentile(v, 99))
                for hop, v in self.hops_ms.items() if v}

    def summary(self) -> str:
        hops = ", ".join(f"{hop} p50 {p50:.0f} ms p99 {p99:.0f} ms"
                         for hop, (p50, p99) in self.percentiles().items())
        return (f"{self.referrals} referrals ({self.served} served) in {self.seconds:.1f} s; "
                f"{self.emails} emails, {self.sms} SMS, {self.resends} resends, "
                f"{len(self.distinct_duplicates)} distinct duplicates; "
                f"{self.dead_letters} dead letters; {self.http_retries} HTTP retries; {hops}")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def timeline_hops(detail: dict[str, Any], sent_at: datetime | None = None) -> dict[str, float]:
    """Per-hop latency in ms from the timeline's `at` (each event's own time) and the message's
    sent_at (notifications' record): opened→matched, matched→sent, opened→sent, and
    sent→contacted where the family replied."""
    at: dict[str, datetime] = {}
    for entry in detail.get("timeline", []):
        at.setdefault(entry["event"], _parse_time(entry["at"]))
    if sent_at is not None:
        at["NotificationSent"] = sent_at
    hops = {}
    pairs = [("opened→matched", "ReferralOpened", "PartnerMatched"),
             ("matched→sent", "PartnerMatched", "NotificationSent"),
             ("opened→sent", "ReferralOpened", "NotificationSent"),
             ("sent→contacted", "NotificationSent", "FamilyContacted")]
    for name, a, b in pairs:
        if a in at and b in at:
            hops[name] = (at[b] - at[a]).total_seconds() * 1000
    return hops


class Ledger:
    def __init__(self, api: Api, outreach: Outreach, nats_url: str,
                 district: str = "d001") -> None:
        self.api = api
        self.outreach = outreach
        self.nats_url = nats_url
        self.district = district
        self.partners: list[dict[str, Any]] = []
        self.opened = 0
        self._progress = asyncio.Condition()
        self.started = 0.0
        self.watch: EventWatch | None = None

    async def watch_events(self) -> None:
        """From now on `wait_done` learns of answers from the bus instead of asking the
        referrals service (benchmarks: waiting must not load what is measured)."""
        self.watch = EventWatch()
        await self.watch.start(self.nats_url, self.district)

    async def close(self) -> None:
        if self.watch is not None:
            await self.watch.close()

    # -- setup -----------------------------------------------------------------------------

    async def register_partners(self, capacity: int) -> None:
        """Two partners for the served need (different languages), none for the unserved one."""
        for name, languages in (("Smile Bright Dental", ["en", "es"]),
                                ("Pho Tooth Clinic", ["en", "vi"])):
            response = await self.api.request("partners", "POST", "/api/v1/partners", json={
                "district_id": self.district, "name": name, "needs": [SERVED_NEED],
                "schools": list(SCHOOLS), "languages": languages, "capacity": capacity})
            assert response.status_code == 201, response.text
            self.partners.append(response.json())

    # -- driving ---------------------------------------------------------------------------

    async def register_families(self, cases: Sequence[Case], concurrency: int = 16) -> None:
        """Register the cases' families ahead (a benchmark times referrals, not sign-ups)."""
        slots = asyncio.Semaphore(concurrency)

        async def one(case: Case) -> None:
            async with slots:
                await self.register_family(case)

        await asyncio.gather(*(one(c) for c in cases))

    async def register_family(self, case: Case) -> None:
        if case.family_id is None:
            body: dict[str, Any] = {
                "district_id": self.district, "school_id": case.school,
                "name": f"Family {case.index}", "preferred_language": case.language,
                "email": case.email, "preferred_channel": case.channel}
            if case.channel == "sms":
                body |= {"phone": case.phone, "sms_consent": True}
            response = await self.api.request("engagement", "POST", "/api/v1/families",
                                              json=body)
            assert response.status_code == 201, response.text
            case.family_id = response.json()["id"]

    async def run_case(self, case: Case) -> None:
        await self.register_family(case)
        referral = {
            "district_id": self.district, "school_id": case.school,
            "student_ref": f"stu-{case.index}-{case.email.split('-')[1]}",
            "family_id": case.family_id,
            "need": SERVED_NEED if case.served else UNSERVED_NEED,
            "urgency": "routine", "consent": "given"}
        response = await self.api.request(
            "referrals", "POST", "/api/v1/referrals", json=referral,
            headers={"Idempotency-Key": f"ledger-{case.email}"},
            # referrals has not yet heard FamilyRegistered: ask again
            retry_if=lambda r: r.status_code == 409 and "not registered" in r.text)
        assert response.status_code in (200, 201), response.text
        case.referral_id = response.json()["id"]
        case.opened_at = time.monotonic()
        async with self._progress:
            self.opened += 1
            self._progress.notify_all()

    async def drive(self, cases: Sequence[Case], concurrency: int = 16,
                    rate: float | None = None) -> None:
        """Open every case's referral; at most `concurrency` in flight, at most `rate` per s."""
        self.started = self.started or time.monotonic()
        slots = asyncio.Semaphore(concurrency)
        t0 = time.monotonic()

        async def one(i: int, case: Case) -> None:
            if rate:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            async with slots:
                await self.run_case(case)

        await asyncio.gather(*(one(i, c) for i, c in enumerate(cases)))

    async def reached(self, count: int) -> None:
        """Returns once `count` referrals have been opened (to time a fault mid-stream)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.opened >= count)

    async def referral(self, referral_id: str) -> dict[str, Any]:
        response = await self.api.request("referrals", "GET", f"/api/v1/referrals/{referral_id}",
                                          params={"district_id": self.district})
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def message_sent_at(self, case: Case) -> datetime | None:
        """When notifications says it sent the family's message (its own record)."""
        response = await self.api.request("notifications", "GET", "/api/v1/messages", params={
            "district_id": self.district, "family_id": case.family_id})
        if response.status_code != 200:
            return None
        times = [m["sent_at"] for m in response.json()
                 if m.get("referral_id") == case.referral_id and m.get("sent_at")]
        return _parse_time(min(times)) if times else None

    async def wait_done(self, cases: Sequence[Case], timeout: float = 120,
                        window: int = 40, confirm: bool = True) -> float:
        """Wait until every referral is at its end; returns when the last got there
        (seconds since the ledger started). Asks about the oldest unfinished one until it is
        done, then about the next window: waiting must not load the services it measures.
        After `watch_events`, the bus tells when, and the services are asked once at the end
        (unless not ``confirm``: a benchmark's timed window ends when the bus says so, and
        `check` asks the services afterwards)."""
        pending = [c for c in cases if c.referral_id]
        assert len(pending) == len(cases), "some referrals were never opened"
        deadline = time.monotonic() + timeout
        if self.watch is not None:
            watch = self.watch
            while pending and time.monotonic() < deadline:
                delivered = {d.recipient for d in self.outreach.delivered()}
                if watch.done(pending[0], delivered):  # the oldest first, then all of them
                    pending = [c for c in pending if not watch.done(c, delivered)]
                else:
                    await asyncio.sleep(0.02)
            finished = time.monotonic() - self.started
            if not confirm:
                return finished if not pending else -1.0
            # The bus said so; the services' own records must agree (`check` reads them all).
            pending = [c for c in cases if c.referral_id]
            if await self._http_wait(pending, deadline, window) < 0:
                return -1.0
            return finished
        return await self._http_wait(pending, deadline, window)

    async def _http_wait(self, pending: list[Case], deadline: float, window: int = 40) -> float:
        while pending:
            head = pending[:window] if await self._done(pending[:1]) else []
            done = await self._done(head)
            pending = [c for c in pending if c.index not in done]
            if not pending:
                break
            if time.monotonic() > deadline:
                return -1.0
            if not done:
                await asyncio.sleep(0.2)
        return time.monotonic() - self.started

    async def _done(self, cases: Sequence[Case]) -> set[int]:
        details = await asyncio.gather(*(self.referral(c.referral_id or "") for c in cases))
        delivered = {d.recipient for d in self.outreach.delivered()} if cases else set()
        return {c.index for c, d in zip(cases, details, strict=True)
                if referral_done(c, d, delivered)}

    async def wait_drained(self, timeout: float = 90) -> list[ConsumerState]:
        """Wait until every durable consumer has nothing pending and nothing unacked."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                busy = [s for s in await consumer_states(self.nats_url)
                        if s.pending or s.ack_pending]
            except Exception as exc:  # a node coming back: ask again
                busy = [ConsumerState("?", f"error {type(exc).__name__}", -1, -1, 0)]
            if not busy or time.monotonic() > deadline:
                return busy
            await asyncio.sleep(0.5)

    # -- checking --------------------------------------------------------------------------

    async def check(self, cases: Sequence[Case], *, expected_dead_letters: int = 0,
                    timeout: float = 120, details: bool = True,
                    settle: Callable[[], Awaitable[None]] | None = None,
                    timed: Sequence[Case] | None = None) -> Report:
        """Account for `cases` (every case this ledger drove, warm-ups included, or messages
        and capacity will not add up); latencies come from `timed` (default: all)."""
        timed_ids = {c.index for c in (timed if timed is not None else cases)}
        served = [c for c in cases if c.served]
        report = Report(referrals=len(cases), served=len(served),
                        expected_dead_letters=expected_dead_letters)
        report.seconds = await self.wait_done(cases, timeout)
        report.unacked = await self.wait_drained()
        if settle:
            await settle()

        by_referral: dict[str, dict[str, Any]] = {}
        if details:
            slots = asyncio.Semaphore(16)

            async def get(case: Case) -> None:
                async with slots:
                    by_referral[case.referral_id or ""] = await self.referral(
                        case.referral_id or "")

            sent_at: dict[str, datetime] = {}

            async def sent(case: Case) -> None:
                async with slots:
                    if when := await self.message_sent_at(case):
                        sent_at[case.referral_id or ""] = when

            await asyncio.gather(*(get(c) for c in cases), *(sent(c) for c in served))
            delivered = {d.recipient for d in self.outreach.delivered()}
            hops: dict[str, list[float]] = defaultdict(list)
            for case in cases:
                detail = by_referral[case.referral_id or ""]
                if not referral_done(case, detail, delivered):
                    report.not_done.append((case.referral_id or "", detail.get("status", "?")))
                kinds = Counter(e["event"] for e in detail.get("timeline", []))
                report.repeated_events += [(case.referral_id or "", k, n)
                                           for k, n in kinds.items()
                                           if n > 1 and k not in LEGAL_REPEATS]
                if case.index not in timed_ids:
                    continue
                for hop, ms in timeline_hops(detail, sent_at.get(case.referral_id or "")).items():
                    hops[hop].append(ms)
            report.hops_ms = dict(hops)
            await self._check_capacity(cases, by_referral, report)

        self._check_messages(cases, report)
        report.dead_letters = len(await dead_letters(self.nats_url))
        report.http_retries = self.api.retries
        return report

    async def _check_capacity(self, cases: Sequence[Case], by_referral: dict[str, Any],
                              report: Report) -> None:
        matched = Counter(by_referral[c.referral_id or ""].get("partner_id")
                          for c in cases if c.served)
        for partner in self.partners:
            response = await self.api.request(
                "partners", "GET", f"/api/v1/partners/{partner['id']}",
                params={"district_id": self.district})
            reserved = sum(s["reserved"] for s in response.json()["services"])
            if reserved != matched[partner["id"]]:
                report.reserved_mismatch.append(
                    f"{partner['name']}: reserved {reserved}, matched {matched[partner['id']]}")

    def _check_messages(self, cases: Sequence[Case], report: Report) -> None:
        delivered = self.outreach.delivered()
        report.emails = sum(d.channel == "email" for d in delivered)
        report.sms = sum(d.channel == "sms" for d in delivered)
        got: dict[tuple[str, str], list[str]] = defaultdict(list)
        for d in delivered:
            got[(d.channel, d.recipient)].append(d.key)
        expected = set()
        for case in cases:
            other = "email" if case.channel == "sms" else "sms"
            other_recipient = case.email if other == "email" else case.phone
            expected |= {(case.channel, case.recipient), (other, other_recipient)}
            keys = got.get((case.channel, case.recipient), [])
            if got.get((other, other_recipient)):
                report.wrong_channel.append(f"{case.index}: {other}")
            if not case.served:
                if keys:
                    report.stray_messages.append(f"{case.index}: unserved but messaged")
                continue
            if not keys:
                report.missing_messages.append(f"{case.index} ({case.channel})")
            elif len(set(keys)) > 1:
                report.distinct_duplicates.append(f"{case.index}: {len(keys)} messages")
            elif len(keys) > 1:
                report.resends += len(keys) - 1
                report.resent_recipients.append(f"{case.index}")
        report.stray_messages += [f"{c}:{r}" for (c, r) in got if (c, r) not in expected]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (as benchmarks.harness.percentile)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
