"""The event contract: committed JSON Schemas match the models, a published version never breaks,
and the compatibility checker itself on synthetic before/after schemas."""

import json
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from contracts import schema as contract
from contracts.events import EVENTS, Event
from contracts.taxonomy import Need

# --- the committed contract (this is the CI check) --------------------------------------------


def test_every_event_has_an_unbroken_committed_schema() -> None:
    problems = contract.check()
    assert problems == [], "\n".join(problems)


def test_asyncapi_document_is_committed_and_current() -> None:
    problems = contract.check_asyncapi()
    assert problems == [], "\n".join(problems)


def test_one_file_per_type_and_version_named_after_the_type() -> None:
    for ce_type, cls in EVENTS.items():
        document = json.loads(contract.schema_path(ce_type).read_text())
        assert document["title"] == ce_type
        assert document["properties"]["type"]["const"] == ce_type
        assert document["x-ensemble-internal"] is cls.internal
        assert set(document["required"]) >= {"specversion", "id", "source", "type", "time",
                                              "districtid", "correlationid", "data"}


# --- the check's behaviour on a scratch directory ---------------------------------------------


@pytest.fixture
def events() -> Iterator[dict[str, type[Event]]]:
    """EVENTS restored after a test that defines its own event classes."""
    saved = dict(EVENTS)
    yield EVENTS
    EVENTS.clear()
    EVENTS.update(saved)


def only(events: dict[str, type[Event]], *keep: type[Event]) -> None:
    events.clear()
    events.update({cls.ce_type(): cls for cls in keep})


def test_missing_schema_fails_and_names_the_command(tmp_path: Path) -> None:
    problems = contract.check(tmp_path)
    assert len(problems) == len(EVENTS)
    assert "org.ensemble.referrals.opened.v1: no committed schema" in "\n".join(problems)
    assert all("python -m contracts.schema --write" in p for p in problems)


def test_breaking_change_fails_until_the_version_is_raised(
    tmp_path: Path, events: dict[str, type[Event]]
) -> None:
    class LessonBooked(Event):
        domain = "testing"
        name = "lesson_booked"
        lesson_id: str
        minutes: int

    only(events, LessonBooked)
    assert contract.write(tmp_path, tmp_path / "asyncapi.json") == []
    v1_file = tmp_path / "org.ensemble.testing.lesson_booked.v1.json"
    published = v1_file.read_text()

    class LessonBookedChanged(Event):  # same type and version, minutes now a string
        domain = "testing"
        name = "lesson_booked"
        lesson_id: str
        minutes: str

    only(events, LessonBookedChanged)
    [problem] = contract.check(tmp_path)
    assert "breaking change to a published version" in problem
    assert "minutes: type changed" in problem
    assert "Raise LessonBookedChanged.version to 2" in problem
    assert contract.write(tmp_path, tmp_path / "asyncapi.json") == [problem]
    assert v1_file.read_text() == published  # a breaking write never overwrites

    class LessonBookedV2(Event):
        domain = "testing"
        name = "lesson_booked"
        version = 2
        lesson_id: str
        minutes: str

    only(events, LessonBookedV2)
    assert contract.check(tmp_path) == [
        "org.ensemble.testing.lesson_booked.v2: no committed schema "
        "org.ensemble.testing.lesson_booked.v2.json; run `python -m contracts.schema --write`"
    ]
    assert contract.write(tmp_path, tmp_path / "asyncapi.json") == []
    assert contract.check(tmp_path) == []
    assert v1_file.read_text() == published  # the old version's file stays
    assert (tmp_path / "org.ensemble.testing.lesson_booked.v2.json").exists()


def test_compatible_change_asks_to_regenerate(tmp_path: Path,
                                               events: dict[str, type[Event]]) -> None:
    class ClubJoined(Event):
        domain = "testing"
        name = "club_joined"
        club_id: str

    only(events, ClubJoined)
    contract.write(tmp_path, tmp_path / "asyncapi.json")

    class ClubJoinedMore(Event):
        domain = "testing"
        name = "club_joined"
        club_id: str
        seats: int | None = None

    only(events, ClubJoinedMore)
    [problem] = contract.check(tmp_path)
    assert problem.endswith("is out of date; run `python -m contracts.schema --write`")
    contract.write(tmp_path, tmp_path / "asyncapi.json")
    assert contract.check(tmp_path) == []


def test_cli_check_fails_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(contract, "SCHEMA_DIR", tmp_path)
    monkeypatch.setattr(contract, "ASYNCAPI_FILE", tmp_path / "asyncapi.json")
    assert contract.main(["--check"]) == 1
    assert "run `python -m contracts.schema --write`" in capsys.readouterr().err


# --- the compatibility checker on synthetic schemas -------------------------------------------


class Color(StrEnum):
    red = "red"
    green = "green"


class ColorPlus(StrEnum):
    red = "red"
    green = "green"
    blue = "blue"


class ColorLess(StrEnum):
    red = "red"


class Before(BaseModel):
    id: str
    count: int
    color: Color
    need: Need | None = None
    at: datetime
    tags: list[str] = Field(default_factory=list)
    code: str = Field(max_length=64)


def changed(**fields: Any) -> dict[str, Any]:
    """Before's schema with some fields redefined (None removes one)."""
    from pydantic import create_model

    definitions: dict[str, Any] = {}
    for name, info in Before.model_fields.items():
        definitions[name] = (info.annotation, info)
    for name, spec in fields.items():
        if spec is None:
            definitions.pop(name)
        else:
            definitions[name] = spec
    return create_model("After", **definitions).model_json_schema()


BEFORE = Before.model_json_schema()


def test_identical_is_compatible() -> None:
    assert contract.breaking_changes(BEFORE, Before.model_json_schema()) == []


def test_removed_field_breaks() -> None:
    assert contract.breaking_changes(BEFORE, changed(count=None)) == ["count: field removed"]


def test_retyped_field_breaks() -> None:
    assert contract.breaking_changes(BEFORE, changed(count=(str, ...))) == [
        "count: type changed from ['integer'] to ['string']"]
    assert contract.breaking_changes(BEFORE, changed(at=(str, ...))) == [
        "at: format changed from date-time to None"]
    assert contract.breaking_changes(BEFORE, changed(count=(int | None, None))) == [
        "count: type changed from ['integer'] to ['integer', 'null']"]


def test_new_required_field_breaks() -> None:
    assert contract.breaking_changes(BEFORE, changed(school_id=(str, ...))) == [
        "school_id: new required field"]


def test_optional_field_becoming_required_breaks() -> None:
    assert contract.breaking_changes(BEFORE, changed(tags=(list[str], ...))) == [
        "tags: optional field became required"]


def test_new_optional_field_is_compatible() -> None:
    assert contract.breaking_changes(BEFORE, changed(school_id=(str | None, None))) == []
    assert contract.breaking_changes(BEFORE, changed(seats=(int, 0))) == []


def test_enum_value_removed_breaks() -> None:
    assert contract.breaking_changes(BEFORE, changed(color=(ColorLess, ...))) == [
        "color: enum values removed: ['green']"]


def test_enum_value_added_is_compatible() -> None:
    assert contract.breaking_changes(BEFORE, changed(color=(ColorPlus, ...))) == []


def test_enum_narrowing_inside_an_optional_breaks() -> None:
    class FewNeeds(StrEnum):
        dental = "dental"

    assert contract.breaking_changes(BEFORE, changed(need=(FewNeeds | None, None))) == [
        f"need: enum values removed: {sorted(v.value for v in Need if v != 'dental')}"]


def test_free_string_narrowed_to_enum_breaks() -> None:
    problems = contract.breaking_changes(BEFORE, changed(id=(Color, ...)))
    assert problems == ["id: narrowed to the values ['green', 'red']"]


def test_list_item_retyped_breaks() -> None:
    assert contract.breaking_changes(BEFORE, changed(tags=(list[int], []))) == [
        "tags[]: type changed from ['string'] to ['integer']"]


def test_bounds_narrowed_break_and_widened_do_not() -> None:
    assert contract.breaking_changes(BEFORE, changed(code=(str, Field(max_length=32)))) == [
        "code: maxLength narrowed from 64 to 32"]
    assert contract.breaking_changes(BEFORE, changed(code=(str, Field(max_length=128)))) == []
    assert contract.breaking_changes(BEFORE, changed(count=(int, Field(ge=0)))) == [
        "count: new bound minimum=0"]


def test_nested_data_is_compared() -> None:
    class Data(BaseModel):
        referral_id: str
        need: Need

    class DataNarrow(BaseModel):
        referral_id: str

    class Wrapper(BaseModel):
        data: Data

    class WrapperAfter(BaseModel):
        data: DataNarrow

    assert contract.breaking_changes(Wrapper.model_json_schema(),
                                     WrapperAfter.model_json_schema()) == [
        "data.need: field removed"]
