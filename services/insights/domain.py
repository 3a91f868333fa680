"""The monthly data pack, pure: facts in (as the public events carried them), tables of counts
out, each suppressed (suppression.py) before anyone sees it. No I/O, no clock.

A pack covers the twelve months ending with its month (``YYYY-MM``, in the district's time
zone): monthly trends for those months, every other figure for the whole window.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

from contracts.taxonomy import Need, Outcome
from services.insights.suppression import DEFAULT_THRESHOLD, Masked, suppress

WINDOW_MONTHS = 12
# What the public events cannot tell, said in every pack (docs/insights.md explains each).
MISSING = (
    "Capacity by need counts only services that have been matched at least once: "
    "CapacityChanged carries no need, so a service's need is learned from its PartnerMatched.",
    "Delivery failures are counted by month, not by language: NotificationFailed carries no "
    "language.",
    "Families unreachable counts referrals whose family was unreachable; outreach that was not "
    "about a referral is not counted.",
    "Attendance is what staff recorded; families who came without an invitation are not in the "
    "events.",
)


# --- facts (what the store holds, as plain values: tuples, thousands a pack) -------------------


class Referral(NamedTuple):
    referral_id: str
    school_id: str
    need: str
    opened_at: datetime


class Step(NamedTuple):
    referral_id: str
    step: str  # matched accepted declined in_service contacted unreachable no_partner closed ...
    at: datetime
    partner_id: str | None = None
    partner_name: str | None = None
    service_id: str | None = None
    need: str | None = None
    outcome: str | None = None


class Capacity(NamedTuple):
    service_id: str
    school_id: str | None
    partner_id: str
    capacity: int
    reserved: int
    at: datetime


class FamilyEvent(NamedTuple):
    family_event_id: str
    school_id: str
    title: str
    starts_at: datetime


class Response(NamedTuple):
    family_event_id: str
    family_id: str
    kind: str  # rsvp_yes rsvp_no attended
    at: datetime


class MessageEvent(NamedTuple):
    family_id: str
    kind: str  # sent failed delivered opted_out opted_in
    channel: str | None
    language: str | None
    at: datetime
    notification_id: str | None = None


@dataclass
class Facts:
    referrals: list[Referral] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    capacity: list[Capacity] = field(default_factory=list)
    events: list[FamilyEvent] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    messages: list[MessageEvent] = field(default_factory=list)
    service_needs: dict[str, str] = field(default_factory=dict)  # learned from matches


# --- the pack --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """Counts in rows and columns; ``additive`` tables add up along rows (a row total is
    shown), the others are suppressed column by column. Columns named in ``plain`` count things,
    not families (events, slots), and are shown as they are."""

    key: str
    title: str
    row_label: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]
    additive: bool = True
    plain: frozenset[str] = frozenset()
    note: str = ""


@dataclass(frozen=True)
class Shown:
    """A table as it may leave the district: every count as text, totals included."""

    table: Table
    header: tuple[str, ...]
    body: tuple[tuple[str, ...], ...]  # rows, then the totals row
    values: tuple[tuple[int | None, ...], ...]  # the counts shown (None: withheld)


@dataclass(frozen=True)
class Figure:
    label: str
    value: str


@dataclass(frozen=True)
class Pack:
    district_id: str
    school_id: str | None
    month: str
    months: tuple[str, ...]
    threshold: int
    tables: tuple[Shown, ...]
    figures: tuple[Figure, ...]
    missing: tuple[str, ...] = MISSING

    def table(self, key: str) -> Shown:
        return next(t for t in self.tables if t.table.key == key)


def months_ending(month: str, n: int = WINDOW_MONTHS) -> tuple[str, ...]:
    year, mon = (int(p) for p in month.split("-"))
    out = []
    for _ in range(n):
        out.append(f"{year:04d}-{mon:02d}")
        year, mon = (year, mon - 1) if mon > 1 else (year - 1, 12)
    return tuple(reversed(out))


_MONTHS: dict[tuple[str, int], str] = {}


def month_of(at: datetime, zone: ZoneInfo) -> str:
    """``YYYY-MM`` of an instant in a zone. Every zone's offset is a multiple of 15 minutes,
    so no month begins inside a quarter hour of UTC: one answer per quarter hour, kept."""
    key = (zone.key, int(at.timestamp()) // 900)
    found = _MONTHS.get(key)
    if found is None:
        if len(_MONTHS) > 1_000_000:
            _MONTHS.clear()
        found = _MONTHS[key] = at.astimezone(zone).strftime("%Y-%m")
    return found


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (as numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def show(table: Table, threshold: int) -> Shown:
    """The table suppressed: additive tables as one grid with row and column totals, the
    others column by column with each column's total."""
    header = (table.row_label, *table.columns, *(("Total",) if table.additive and
                                                  len(table.columns) > 1 else ()))
    n_rows = len(table.rows)
    if not n_rows:
        return Shown(table, header, (("Total", *("0" for _ in header[1:])),),
                     ((*(0 for _ in header[1:]),),))
    if table.additive:
        masked = suppress(table.counts, threshold)
        width = len(masked.values[0])
        texts = [[masked.text(r, c) for c in range(width)] for r in range(n_rows + 1)]
        values = [[masked.shown(r, c) for c in range(width)] for r in range(n_rows + 1)]
    else:
        texts = [[] for _ in range(n_rows + 1)]
        values = [[] for _ in range(n_rows + 1)]
        for c, name in enumerate(table.columns):
            column = [[row[c]] for row in table.counts]
            masked = _plain(column) if name in table.plain else suppress(column, threshold)
            for r in range(n_rows + 1):
                texts[r].append(masked.text(r, 0))
                values[r].append(masked.shown(r, 0))
    labels = [*table.rows, "Total"]
    body = tuple((labels[r], *texts[r]) for r in range(n_rows + 1))
    return Shown(table, header, body, tuple(tuple(v) for v in values))


def _plain(column: list[list[int]]) -> Masked:
    return suppress(column, 1)  # a threshold of 1 withholds nothing


# --- building it -------------------------------------------------------------------------------


def build_pack(facts: Facts, *, district_id: str, school_id: str | None, month: str,
               zone: ZoneInfo, threshold: int = DEFAULT_THRESHOLD) -> Pack:
    months = months_ending(month)
    window = set(months)
    opened = [r for r in facts.referrals if month_of(r.opened_at, zone) in window]
    by_referral: dict[str, list[Step]] = defaultdict(list)
    for step in facts.steps:
        by_referral[step.referral_id].append(step)
    needs = {r.referral_id: r.need for r in facts.referrals}
    pairs = answered_matches(facts.steps)
    tables = [
        _opened_by_need(opened, months, zone),
        _closed_by_need(facts.steps, needs, months, zone),
        _outcomes(facts.steps, needs, window, zone),
        _partners(pairs, needs, window, zone),
        _demand_capacity(opened, facts, window, zone),
        _family_events(facts, months, zone),
        _messages_by_language(facts, window, zone),
        _message_trouble(facts, months, zone),
    ]
    shown = tuple(show(t, threshold) for t in tables)
    figures = [*_timings(opened, by_referral, threshold),
               _answer_time(pairs, {r.referral_id for r in opened}, threshold),
               *_shares(shown, opened, by_referral, threshold)]
    return Pack(district_id, school_id, month, months, threshold, shown, tuple(figures))


def _by_need(pairs: Iterable[tuple[str, str]], months: Sequence[str]) -> Table:
    counts = Counter(pairs)
    rows = [n.value for n in Need if any(counts[(n.value, m)] for m in months)]
    return Table("", "", "Need", tuple(rows), tuple(months),
                 tuple(tuple(counts[(n, m)] for m in months) for n in rows))


def _opened_by_need(opened: list[Referral], months: Sequence[str], zone: ZoneInfo) -> Table:
    t = _by_need(((r.need, month_of(r.opened_at, zone)) for r in opened), months)
    return Table("referrals_opened", "Referrals opened by need and month", t.row_label, t.rows,
                 t.columns, t.counts)


def _closed_by_need(steps: list[Step], needs: dict[str, str], months: Sequence[str],
                    zone: ZoneInfo) -> Table:
    closed = _first(steps, "closed")
    t = _by_need(((needs[s.referral_id], month_of(s.at, zone)) for s in closed.values()
                  if s.referral_id in needs), months)
    return Table("referrals_closed", "Referrals closed by need and month", t.row_label, t.rows,
                 t.columns, t.counts)


def _first(steps: Iterable[Step], kind: str) -> dict[str, Step]:
    """The earliest step of a kind per referral."""
    first: dict[str, Step] = {}
    for s in steps:
        if s.step == kind and (s.referral_id not in first or
                               _order(s) < _order(first[s.referral_id])):
            first[s.referral_id] = s
    return first


def _outcomes(steps: list[Step], needs: dict[str, str], window: set[str],
              zone: ZoneInfo) -> Table:
    ended = {**_first(steps, "cancelled"), **_first(steps, "closed")}  # closed wins
    counts = Counter(s.outcome or "cancelled" for s in ended.values()
                     if s.referral_id in needs and month_of(s.at, zone) in window)
    rows = [o.value for o in Outcome] + ["cancelled"]
    rows = [o for o in rows if counts[o]]
    return Table("outcomes", "Outcome of referrals ended in the window", "Outcome", tuple(rows),
                 ("Referrals",), tuple((counts[o],) for o in rows))


def answered_matches(steps: Iterable[Step]) -> list[tuple[Step, Step | None]]:
    """Each match with the partner's answer to it: a referral's matches to one partner and
    that partner's answers, each in time order, paired in turn (a partner matched twice to a
    referral answers twice). The same pairs whatever order the steps come in."""
    matches: dict[tuple[str, str], list[Step]] = defaultdict(list)
    answers: dict[tuple[str, str], list[Step]] = defaultdict(list)
    for s in steps:
        if not s.partner_id:
            continue
        if s.step == "matched":
            matches[(s.referral_id, s.partner_id)].append(s)
        elif s.step in ("accepted", "declined"):
            answers[(s.referral_id, s.partner_id)].append(s)
    pairs: list[tuple[Step, Step | None]] = []
    for key, found in matches.items():
        given = sorted(answers.get(key, ()), key=_order)
        for i, match in enumerate(sorted(found, key=_order)):
            pairs.append((match, given[i] if i < len(given) else None))
    return pairs


def _order(s: Step) -> tuple[datetime, str, str]:
    return (s.at, s.step, s.outcome or "")


def _partners(pairs: list[tuple[Step, Step | None]], needs: dict[str, str], window: set[str],
              zone: ZoneInfo) -> Table:
    names: dict[str, str] = {}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for match, answer in pairs:
        if match.referral_id not in needs or month_of(match.at, zone) not in window:
            continue
        partner = match.partner_id or ""
        names[partner] = min(names.get(partner, match.partner_name or partner),
                             match.partner_name or partner)
        counts[partner][answer.step if answer else "unanswered"] += 1
    rows = sorted(counts, key=lambda p: (names[p].lower(), p))
    return Table("partners", "Partners' answers to the referrals matched to them", "Partner",
                 tuple(names[p] for p in rows), ("accepted", "declined", "unanswered"),
                 tuple((counts[p]["accepted"], counts[p]["declined"], counts[p]["unanswered"])
                       for p in rows),
                 note="Total: referrals matched to the partner.")


def _demand_capacity(opened: list[Referral], facts: Facts, window: set[str],
                     zone: ZoneInfo) -> Table:
    demand = Counter(r.need for r in opened)
    ids = {r.referral_id for r in opened}
    unmet = Counter(s.need for s in _first(facts.steps, "no_partner").values()
                    if s.referral_id in ids and s.need)
    latest: dict[tuple[str, str | None], Capacity] = {}
    for c in facts.capacity:
        key = (c.service_id, c.school_id)
        if key not in latest or (c.at, c.capacity, c.reserved) > \
                (latest[key].at, latest[key].capacity, latest[key].reserved):
            latest[key] = c
    slots: Counter[str] = Counter()
    taken: Counter[str] = Counter()
    for c in latest.values():
        need = facts.service_needs.get(c.service_id)
        if need:
            slots[need] += c.capacity
            taken[need] += c.reserved
    rows = [n.value for n in Need if demand[n.value] or slots[n.value] or unmet[n.value]]
    return Table("demand_capacity", "Demand against capacity by need", "Need", tuple(rows),
                 ("referrals opened", "no partner available", "slots", "slots taken"),
                 tuple((demand[n], unmet[n], slots[n], taken[n]) for n in rows),
                 additive=False, plain=frozenset({"slots", "slots taken"}),
                 note="Slots: the latest capacity of each service at each school.")


def _family_events(facts: Facts, months: Sequence[str], zone: ZoneInfo) -> Table:
    when = {e.family_event_id: month_of(e.starts_at, zone) for e in facts.events}
    events = Counter(when.values())
    latest: dict[tuple[str, str], Response] = {}
    attended: set[tuple[str, str]] = set()
    for r in facts.responses:
        key = (r.family_event_id, r.family_id)
        if r.kind == "attended":
            attended.add(key)
        elif key not in latest or (r.at, r.kind) > (latest[key].at, latest[key].kind):
            latest[key] = r
    yes = Counter(when.get(k[0]) for k, r in latest.items() if r.kind == "rsvp_yes")
    no = Counter(when.get(k[0]) for k, r in latest.items() if r.kind == "rsvp_no")
    came = Counter(when.get(k[0]) for k in attended)
    return Table("family_events", "Family events, answers and attendance by month", "Month",
                 tuple(months), ("events", "RSVP yes", "RSVP no", "attended"),
                 tuple((events[m], yes[m], no[m], came[m]) for m in months),
                 additive=False, plain=frozenset({"events"}),
                 note="An RSVP counts once per family and event (its latest answer).")


def _messages_by_language(facts: Facts, window: set[str], zone: ZoneInfo) -> Table:
    sent = Counter((m.language or "unknown",
                    m.channel or "unknown")
                   for m in facts.messages if m.kind == "sent" and month_of(m.at, zone) in window)
    languages = sorted({lang for lang, _ in sent})
    channels = ("email", "sms")
    return Table("messages", "Messages sent by language and channel", "Language",
                 tuple(languages), channels,
                 tuple(tuple(sent[(lang, ch)] for ch in channels) for lang in languages))


def _message_trouble(facts: Facts, months: Sequence[str], zone: ZoneInfo) -> Table:
    kinds = {"failed": Counter(), "opted_out": Counter(), "opted_in": Counter()}
    for m in facts.messages:
        if m.kind in kinds:
            kinds[m.kind][month_of(m.at, zone)] += 1
    return Table("message_trouble", "Delivery failures and opt-outs by month", "Month",
                 tuple(months), ("delivery failures", "opt-outs", "opt-ins"),
                 tuple((kinds["failed"][m], kinds["opted_out"][m], kinds["opted_in"][m])
                       for m in months), additive=False)


def _days(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 86400


def _timings(opened: list[Referral], steps: dict[str, list[Step]],
             threshold: int) -> list[Figure]:
    """Median and 90th percentile days from opened to each first step, over the referrals
    opened in the window that reached it; withheld when fewer than the threshold did."""
    kinds = (("matched", "matched"), ("contacted", "family contacted"),
             ("in_service", "in service"), ("closed", "closed"))
    days: dict[str, list[float]] = {kind: [] for kind, _ in kinds}
    for r in opened:
        first: dict[str, datetime] = {}
        for s in steps.get(r.referral_id, ()):
            if s.step in days and (s.step not in first or s.at < first[s.step]):
                first[s.step] = s.at
        for kind, at in first.items():
            days[kind].append(max(0.0, _days(r.opened_at, at)))
    out = []
    for kind, label in kinds:
        name = f"Days from opened to {label} (median / 90th percentile)"
        found = days[kind]
        out.append(Figure(name, f"withheld: fewer than {threshold} referrals")
                   if len(found) < threshold else
                   Figure(name, f"{percentile(found, 50):.1f} / {percentile(found, 90):.1f} "
                                f"(n={len(found)})"))
    return out


def _answer_time(pairs: list[tuple[Step, Step | None]], ids: set[str],
                 threshold: int) -> Figure:
    hours = [max(0.0, (answer.at - match.at).total_seconds() / 3600)
             for match, answer in pairs if answer is not None and match.referral_id in ids]
    label = "Partners' hours to answer a match (median / 90th percentile)"
    if len(hours) < threshold:
        return Figure(label, f"withheld: fewer than {threshold} answers")
    return Figure(label, f"{percentile(hours, 50):.1f} / {percentile(hours, 90):.1f} "
                         f"(n={len(hours)})")


def _share(part: int | None, whole: int | None) -> str:
    if part is None or whole is None or whole == 0:
        return "withheld"
    return f"{100 * part / whole:.0f}%"


def _shares(shown: Sequence[Shown], opened: list[Referral], steps: dict[str, list[Step]],
            threshold: int) -> list[Figure]:
    """Shares made only of counts the tables show, so a share reveals nothing withheld."""
    outcomes = next(t for t in shown if t.table.key == "outcomes")
    rows = {row[0]: i for i, row in enumerate(outcomes.body)}
    received = outcomes.values[rows["services_received"]][0] \
        if "services_received" in rows else 0
    total = outcomes.values[-1][0]
    partners = next(t for t in shown if t.table.key == "partners")
    declined, answered = partners.values[-1][1], None
    if partners.values[-1][0] is not None and declined is not None:
        answered = partners.values[-1][0] + declined
    unreachable = sum(1 for r in opened
                      if any(s.step == "unreachable" for s in steps.get(r.referral_id, ())))
    return [
        Figure("Share of ended referrals closed with services received",
               _share(received, total)),
        Figure("Partners' decline rate (declined / answered)", _share(declined, answered)),
        Figure("Referrals whose family could not be reached",
               str(unreachable) if unreachable == 0 or unreachable >= threshold
               else f"<{threshold}"),
    ]
