"""The outreach open at a phone (a match's reply code, a family's text) is read through indexes:
the families by district and phone or by id, their outreach by family. The memory benchmark
found the earlier statement reading every open outreach of the district on SQLite, about
100 ms a match once 50,000 referrals were waiting for an answer."""

import pytest
from support.sql import sqlite_plan

from services.engagement.contacts import _at_phone
from services.engagement.tables import Base


def plan(with_family: bool, lock: bool) -> list[str]:
    return sqlite_plan(Base.metadata, _at_phone(with_family, lock).params(
        district="d001", phone="+15555550100", family="f-1"))


@pytest.mark.parametrize("lock", [False, True])
@pytest.mark.parametrize("with_family", [False, True])
def test_the_outreach_at_a_phone_is_read_through_indexes(with_family: bool, lock: bool) -> None:
    steps = plan(with_family, lock)
    reads = [s for s in steps if s.startswith(("SCAN", "SEARCH"))]
    assert not [s for s in reads if s.startswith("SCAN") and "CONSTANT" not in s], steps
    assert "SEARCH families USING INDEX ix_families_district_phone (district_id=? AND phone=?)" \
        in reads, steps
    assert "SEARCH outreach USING INDEX ix_outreach_family_id (family_id=?)" in reads, steps
    assert not [s for s in reads if "ix_outreach_due" in s], steps
    if with_family:
        assert any(s.startswith("SEARCH families USING") and "(id=?)" in s for s in reads), steps
