"""The gap map: per school and need, for a period, what was asked for, what was found, and
where nothing is there. What a Coordination of Services Team reviews each month.

The referral numbers follow the referrals *opened* in the period (a cohort), each counted once
by where it stands now:
- opened: referrals opened in the period;
- matched: those whose last match found a partner; unmatched: those whose last match found
  none (NoPartnerAvailable); the rest wait for consent or were declined consent;
- declined: partner declines those referrals received (one referral may have several);
- services_received: closed with outcome services_received.
Capacity is the directory now (active services of active organizations): slots offered at the
school, slots in use, and demand = referrals opened in the period. ``gap`` names the first of:
no_partner (nobody serves the need there), unmatched (referrals found no partner),
over_capacity (demand above the slots offered).
"""

import csv
import io
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.taxonomy import Need, Outcome
from runtime.districts import District
from services.partners.tables import Partner, PartnerService, ReferralRequest, ServiceCapacity


@dataclass
class GapRow:
    school_id: str
    need: str
    opened: int = 0
    matched: int = 0
    unmatched: int = 0
    declined: int = 0
    services_received: int = 0
    demand: int = 0
    capacity_offered: int = 0
    capacity_in_use: int = 0
    partner_count: int = 0
    partners: list[str] = field(default_factory=list)
    gap: str = ""


async def gap_map(session: AsyncSession, district: District, schools: list[str],
                  start: datetime, end: datetime) -> list[GapRow]:
    rows = {(s, n.value): GapRow(s, n.value) for s in schools for n in Need}
    referrals = (await session.execute(
        select(ReferralRequest.school_id, ReferralRequest.need, ReferralRequest.last_result,
               ReferralRequest.declines, ReferralRequest.outcome)
        .where(ReferralRequest.district_id == district.id, ReferralRequest.opened_at >= start,
               ReferralRequest.opened_at < end, ReferralRequest.school_id.in_(schools))
    )).all()
    for school_id, need, last_result, declines, outcome in referrals:
        row = rows.get((school_id, need))
        if row is None:
            continue
        row.opened += 1
        row.demand += 1
        row.matched += last_result == "matched"
        row.unmatched += last_result == "no_partner"
        row.declined += declines
        row.services_received += outcome == Outcome.services_received
    offered = (await session.execute(
        select(ServiceCapacity.school_id, ServiceCapacity.need, ServiceCapacity.capacity,
               ServiceCapacity.reserved, Partner.name)
        .join(PartnerService, PartnerService.id == ServiceCapacity.service_id)
        .join(Partner, Partner.id == PartnerService.partner_id)
        .where(ServiceCapacity.district_id == district.id,
               ServiceCapacity.school_id.in_(schools), PartnerService.status == "active",
               Partner.status == "active")
    )).all()
    names: dict[tuple[str, str], set[str]] = {}
    for school_id, need, capacity, reserved, name in offered:
        row = rows.get((school_id, need))
        if row is None:
            continue
        row.capacity_offered += capacity
        row.capacity_in_use += reserved
        names.setdefault((school_id, need), set()).add(name)
    for key, row in rows.items():
        row.partners = sorted(names.get(key, set()))
        row.partner_count = len(row.partners)
        if not row.partner_count:
            row.gap = "no_partner"
        elif row.unmatched:
            row.gap = "unmatched"
        elif row.demand > row.capacity_offered:
            row.gap = "over_capacity"
    return list(rows.values())


def as_json(district: District, start: datetime, end: datetime,
            rows: list[GapRow]) -> dict[str, Any]:
    without: dict[str, list[str]] = {}
    for row in rows:
        if row.gap == "no_partner":
            without.setdefault(row.school_id, []).append(row.need)
    return {
        "district_id": district.id,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "rows": [asdict(r) for r in rows],
        "needs_without_partner": without,
        "totals": {k: sum(getattr(r, k) for r in rows)
                   for k in ("opened", "matched", "unmatched", "declined", "services_received",
                             "capacity_offered", "capacity_in_use")},
    }


def as_csv(rows: list[GapRow]) -> str:
    out = io.StringIO()
    columns = list(GapRow.__dataclass_fields__)
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**asdict(row), "partners": "; ".join(row.partners)})
    return out.getvalue()
