"""The data layer limits every ORM read to the caller's district, schools or partner."""

from datetime import timedelta

import pytest
from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.auth import Role, Unauthorized, issue_token, verify_token
from runtime.db import Database
from runtime.tenancy import Scope, set_scope

SECRET = "a-test-secret-of-at-least-32-bytes-long"


class Base(DeclarativeBase):
    pass


class Thing(Base):
    __tablename__ = "things"
    id: Mapped[str] = mapped_column(String, primary_key=True)
    district_id: Mapped[str] = mapped_column(String)
    school_id: Mapped[str] = mapped_column(String)
    partner_id: Mapped[str | None] = mapped_column(String, nullable=True)


@pytest.fixture
async def db(tmp_path):  # type: ignore[no-untyped-def]
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 't.db'}", Base.metadata)
    await database.create_schema()
    async with database.transaction() as session:
        session.add_all([
            Thing(id="a1", district_id="d001", school_id="s1", partner_id="p1"),
            Thing(id="a2", district_id="d001", school_id="s2", partner_id="p2"),
            Thing(id="b1", district_id="d002", school_id="s9", partner_id="p1"),
        ])
    yield database
    set_scope(None)
    await database.dispose()


async def ids(db: Database) -> set[str]:
    """What a query sees, and what lookups by primary key find: they must agree."""
    async with db.transaction() as session:
        listed = set((await session.scalars(select(Thing.id))).all())
        found = {t for t in ("a1", "a2", "b1") if await session.get(Thing, t) is not None}
    assert listed == found
    return listed


async def test_no_scope_sees_everything(db: Database) -> None:
    set_scope(None)
    assert await ids(db) == {"a1", "a2", "b1"}


async def test_district_scope_hides_other_districts_even_by_primary_key(db: Database) -> None:
    set_scope(Scope(district="d001"))
    assert await ids(db) == {"a1", "a2"}
    async with db.transaction() as session:
        assert await session.get(Thing, "b1") is None
    set_scope(Scope(district="d002"))  # a later request with another scope: no cached leak
    assert await ids(db) == {"b1"}


async def test_coordinator_sees_only_their_schools(db: Database) -> None:
    set_scope(Scope(district="d001", schools=frozenset({"s2"})))
    assert await ids(db) == {"a2"}


async def test_partner_sees_only_its_own(db: Database) -> None:
    set_scope(Scope(district="d001", partner_id="p1"))
    assert await ids(db) == {"a1"}


def test_tokens_round_trip_and_refuse_tampering() -> None:
    token = issue_token(SECRET, subject="ana", role="coordinator", district="d001",
                        schools=["lincoln-es"])
    principal = verify_token(SECRET, token)
    assert principal.role == Role.coordinator and principal.schools == {"lincoln-es"}
    with pytest.raises(Unauthorized):
        verify_token("another-secret-of-at-least-32-bytes!!", token)
    expired = issue_token(SECRET, subject="x", role="district_admin", district="d001",
                          ttl=timedelta(seconds=-1))
    with pytest.raises(Unauthorized):
        verify_token(SECRET, expired)
    with pytest.raises(ValueError, match="names its schools"):
        issue_token(SECRET, subject="x", role="coordinator", district="d001")
