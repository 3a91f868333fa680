"""Erasing a family's free text in referrals (FamilyErased, from engagement) and the daily
retention of closed referrals and of the audit trail.

Referrals hold ids, categories and times, which stay (a referral of an erased family can still
be closed, and counts still add up); the free text typed about the family's referrals, the
referral's note and its notes, goes. Each referral's audit trail records the erasure and the
district admin who asked for it."""

from datetime import datetime, timedelta

from sqlalchemy import delete, select

from contracts.envelope import Envelope
from contracts.events import FamilyErased
from runtime.auth import Role
from runtime.districts import Districts
from runtime.uow import UnitOfWork
from services.referrals.audit import AuditEntry
from services.referrals.lifecycle import CLOSED
from services.referrals.referrals import Desk
from services.referrals.tables import Referral, ReferralNote, TimelineEntry

ERASED = "family_erased"  # the audit action


async def on_family_erased(uow: UnitOfWork, env: Envelope, ev: FamilyErased, desk: Desk) -> None:
    referrals = (await uow.session.scalars(select(Referral).where(
        Referral.district_id == env.districtid, Referral.family_id == ev.family_id)
        .with_for_update())).all()
    ids = [r.id for r in referrals]
    for referral in referrals:
        referral.note = None
    if not ids:
        return
    await uow.session.execute(delete(ReferralNote).where(ReferralNote.referral_id.in_(ids)))
    audited = set((await uow.session.scalars(select(AuditEntry.referral_id).where(
        AuditEntry.referral_id.in_(ids), AuditEntry.action == ERASED,
        AuditEntry.at == ev.erased_at))).all())  # the same erasure asked for again
    uow.session.add_all(
        AuditEntry(district_id=env.districtid, referral_id=referral_id, actor=ev.erased_by,
                   role=Role.district_admin.value, action=ERASED, at=ev.erased_at)
        for referral_id in ids if referral_id not in audited)


async def expire_referrals(uow: UnitOfWork, districts: Districts, now: datetime
                           ) -> dict[str, int]:
    """The daily retention of referrals, per district: referrals closed or cancelled more than
    ``retention.closed_referrals_days`` ago, with their timeline and notes; audit entries older
    than ``retention.audit_days``."""
    counts = {"closed_referrals": 0, "audit_entries": 0}
    for district in districts.districts:
        days = district.retention.closed_referrals_days
        if days is not None:
            expired = select(Referral.id).where(
                Referral.district_id == district.id,
                Referral.status.in_([s.value for s in CLOSED]),
                Referral.closed_at < now - timedelta(days=days))
            await uow.session.execute(delete(TimelineEntry).where(
                TimelineEntry.referral_id.in_(expired)))
            await uow.session.execute(delete(ReferralNote).where(
                ReferralNote.referral_id.in_(expired)))
            gone = await uow.session.execute(delete(Referral).where(Referral.id.in_(expired)))
            counts["closed_referrals"] += int(getattr(gone, "rowcount", 0) or 0)
        days = district.retention.audit_days
        if days is not None:
            gone = await uow.session.execute(delete(AuditEntry).where(
                AuditEntry.district_id == district.id,
                AuditEntry.at < now - timedelta(days=days)))
            counts["audit_entries"] += int(getattr(gone, "rowcount", 0) or 0)
    return counts
