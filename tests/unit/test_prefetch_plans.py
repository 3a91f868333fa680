"""A batch's prefetch reads its rows through the primary key's index, never the whole table:
a composite key written as a row value, ``(district_id, family_id) IN (VALUES ...)``, made
SQLite read every known family (referrals) and every family's language (partners) once a
batch, a cost that grew with the district's history (the memory benchmark found it)."""

from typing import Any

import pytest
from support.sql import sqlite_plan

from runtime.prefetch import _statement
from services.engagement.tables import Family, Outreach
from services.partners.tables import FamilyLanguage, ReferralRequest
from services.referrals.tables import KnownFamily, Referral

ENTITIES = [KnownFamily, FamilyLanguage, Referral, ReferralRequest, Family, Outreach]


def plan(entity: type[Any], lock: bool) -> list[str]:
    columns = len(entity.__mapper__.primary_key)
    return sqlite_plan(entity.metadata, _statement(entity, lock).params(
        {f"k{i}": [f"a{i}", f"b{i}", f"c{i}"] for i in range(columns)}))


@pytest.mark.parametrize("lock", [False, True])
@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.__name__)
def test_a_prefetch_reads_by_primary_key(entity: type[Any], lock: bool) -> None:
    table = entity.__tablename__
    steps = plan(entity, lock)
    assert not [s for s in steps if s.startswith(f"SCAN {table}")], steps
    assert any(s.startswith(f"SEARCH {table} USING") and "=?" in s for s in steps), steps
