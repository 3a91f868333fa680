"""Districts and their schools, read by every service at start from one TOML file."""

import tomllib
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator, model_validator

from contracts.subjects import check_token


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}") from exc
    return value


class School(BaseModel):
    id: str
    name: str
    timezone: str | None = None
    languages: list[str] = Field(default_factory=list)
    grades: list[int] = Field(default_factory=list)

    _zone = field_validator("timezone")(lambda v: v if v is None else _zone(v))


class FollowUpWindows(BaseModel):
    """How long a referral may sit without progress, in hours (crisis) or school days."""

    crisis_hours: float = 1
    urgent_school_days: int = 1
    routine_school_days: int = 5


class District(BaseModel):
    id: str
    name: str
    timezone: str
    languages: list[str] = Field(default_factory=lambda: ["en"])
    non_school_days: list[date] = Field(default_factory=list)
    follow_up: FollowUpWindows = Field(default_factory=FollowUpWindows)
    schools: list[School]

    _token = field_validator("id")(lambda v: check_token(v))
    _zone = field_validator("timezone")(lambda v: _zone(v))

    @model_validator(mode="after")
    def _schools_inherit_zone(self) -> "District":
        for school in self.schools:
            if school.timezone is None:
                school.timezone = self.timezone
            if not school.languages:
                school.languages = list(self.languages)
        return self

    def school(self, school_id: str) -> School | None:
        return next((s for s in self.schools if s.id == school_id), None)


class Districts(BaseModel):
    districts: list[District]

    @model_validator(mode="after")
    def _unique_ids(self) -> "Districts":
        seen: set[str] = set()
        for district in self.districts:
            for key in [district.id, *(f"{district.id}/{s.id}" for s in district.schools)]:
                if key in seen:
                    raise ValueError(f"duplicate id {key}")
                seen.add(key)
        return self

    def get(self, district_id: str) -> District | None:
        return next((d for d in self.districts if d.id == district_id), None)

    def school(self, district_id: str, school_id: str) -> School | None:
        district = self.get(district_id)
        return district.school(school_id) if district else None

    def district_of_school(self, school_id: str) -> District | None:
        """Schools ids are unique within a deployment's file only per district; this finds the
        first district that has the school, for callers that know just the school."""
        return next((d for d in self.districts if d.school(school_id)), None)


def load_districts(path: Path) -> Districts:
    with path.open("rb") as handle:
        return Districts.model_validate(tomllib.load(handle))
