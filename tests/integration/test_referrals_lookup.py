"""Opening a referral looks up the earlier one (Idempotency-Key) and an open duplicate through
indexes: a scan of the district's referrals would make every POST slower as history grows."""

from pathlib import Path

import pytest
from sqlalchemy import text

from contracts.taxonomy import Need
from runtime.db import Database
from services.referrals.referrals import lookup_statement
from services.referrals.tables import Base


@pytest.mark.parametrize("key", ["key-1", None])
async def test_the_lookup_reads_through_indexes_only(tmp_path: Path, key: str | None) -> None:
    db = Database(f"sqlite:///{tmp_path / 'referrals.db'}", Base.metadata)
    await db.create_schema()
    try:
        statement, values = lookup_statement("d001", key, "stu-1", Need.dental)
        sql = str(statement.params(values).compile(db.engine.sync_engine,
                                    compile_kwargs={"literal_binds": True}))
        async with db.engine.connect() as conn:
            plan = [row[-1] for row in await conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
    finally:
        await db.dispose()
    reads = [step for step in plan if "referrals" in step]
    assert len(reads) == (2 if key else 1), plan
    for step in reads:
        assert step.startswith("SEARCH") and ("idempotency_key=?" in step
                                              or "student_ref=? AND need=?" in step), plan
