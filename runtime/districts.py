"""Districts and their schools, read by every service at start from one TOML file."""

import tomllib
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

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


SIGN_IN_ROLES = ("district_admin", "coordinator", "partner")


class RoleRule(BaseModel):
    """One line of a provider's mapping: a person whose ID token (or userinfo) claim ``claim``
    equals ``equals`` (or, for a list such as groups, contains it), or ends with ``ends_with``
    (an e-mail domain), is given ``role``: a coordinator with ``schools``, a partner's staff
    with ``partner_id``. A district admin outranks a coordinator, who outranks a partner; a
    coordinator matching several rules covers all their schools."""

    claim: str
    equals: str | None = None
    ends_with: str | None = None
    role: str
    schools: list[str] = Field(default_factory=list)
    partner_id: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> "RoleRule":
        if (self.equals is None) == (self.ends_with is None):
            raise ValueError("give exactly one of equals or ends_with")
        if self.role not in SIGN_IN_ROLES:
            raise ValueError(f"role must be one of {', '.join(SIGN_IN_ROLES)}")
        if self.role == "coordinator" and not self.schools:
            raise ValueError("a coordinator rule names its schools")
        if self.role == "partner" and not self.partner_id:
            raise ValueError("a partner rule names its partner_id")
        return self


class SignInProvider(BaseModel):
    """An OpenID Provider the district's staff (or its partners' staff) sign in with: Google
    Workspace, Microsoft Entra ID, Clever, ClassLink or any other that speaks OpenID Connect."""

    id: str
    label: str = "Sign in with your district account"
    issuer: str  # discovery at <issuer>/.well-known/openid-configuration
    client_id: str
    # The client secret is never in this file: the name of the environment variable holding
    # it. None: a public client (PKCE only), where the provider allows one.
    client_secret_env: str | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    # The claim whose value becomes the person's user id in Ensemble's audit trails.
    subject_claim: str = "email"
    roles: list[RoleRule] = Field(default_factory=list)

    _token = field_validator("id")(lambda v: check_token(v))

    @field_validator("issuer")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError("the issuer is an https:// URL")
        return value.rstrip("/")

    @field_validator("scopes")
    @classmethod
    def _openid(cls, value: list[str]) -> list[str]:
        return value if "openid" in value else ["openid", *value]


class Retention(BaseModel):
    """How many days each kind of record is kept, counted from when it ended; a kind left out
    is kept for as long as the district runs Ensemble (as before retention existed). Applied
    by each service's daily retention job (docs/privacy.md)."""

    model_config = ConfigDict(extra="forbid")

    closed_referrals_days: int | None = Field(default=None, ge=1, description=(
        "referrals closed or cancelled this long ago, with their timeline and notes"))
    audit_days: int | None = Field(default=None, ge=1, description=(
        "audit trail entries (who read or changed a referral) older than this"))
    messages_days: int | None = Field(default=None, ge=1, description=(
        "messages sent, delivered or failed this long ago (addresses and names with them)"))
    replies_days: int | None = Field(default=None, ge=1, description=(
        "the text of families' replies: held replies deleted, reply notes in the contact log "
        "blanked (the entry stays for counts)"))


class District(BaseModel):
    id: str
    name: str
    timezone: str
    languages: list[str] = Field(default_factory=lambda: ["en"])
    non_school_days: list[date] = Field(default_factory=list)
    follow_up: FollowUpWindows = Field(default_factory=FollowUpWindows)
    retention: Retention = Field(default_factory=Retention)
    # Match a referral to the school's own in-school support (counselor, psychologist, nurse,
    # social worker: partners registered with in_school_of) before any outside partner.
    match_in_school_first: bool = False
    schools: list[School]
    sign_in: list[SignInProvider] = Field(default_factory=list)

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

    @model_validator(mode="after")
    def _rules_name_own_schools(self) -> "District":
        ids = [p.id for p in self.sign_in]
        if len(ids) != len(set(ids)):
            raise ValueError("two sign_in providers with one id")
        for provider in self.sign_in:
            for rule in provider.roles:
                unknown = [s for s in rule.schools if self.school(s) is None]
                if unknown:
                    raise ValueError(f"sign_in {provider.id}: not a school of {self.id}: "
                                     f"{', '.join(unknown)}")
        return self

    def provider(self, provider_id: str) -> SignInProvider | None:
        return next((p for p in self.sign_in if p.id == provider_id), None)

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


class DistrictsFileError(ValueError):
    """The districts file cannot be used; the message is one line naming the file, the
    district (and school) and the field, for a person to fix it."""


def load_districts(path: Path) -> Districts:
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise DistrictsFileError(f"districts file {path}: {exc.strerror or exc} "
                                 "(ENSEMBLE_DISTRICTS_FILE)") from None
    except tomllib.TOMLDecodeError as exc:
        raise DistrictsFileError(f"districts file {path}: not valid TOML: {exc}") from None
    try:
        return Districts.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(raw, error) for error in exc.errors())
        raise DistrictsFileError(f"districts file {path}: {problems}") from None


def _describe(raw: Any, error: ErrorDetails) -> str:
    """'district d001, school lincoln-es: timezone: unknown time zone 'Mars/Base''."""
    where: list[str] = []
    fields: list[str] = []
    node = raw
    loc = list(error["loc"])
    for index, key in enumerate(loc):
        node = node.get(key) if isinstance(node, dict) else (
            node[key] if isinstance(node, list) and isinstance(key, int)
            and key < len(node) else None)
        if isinstance(key, int) and index and loc[index - 1] in ("districts", "schools"):
            kind = "district" if loc[index - 1] == "districts" else "school"
            name = node.get("id") if isinstance(node, dict) else None
            where.append(f"{kind} {name}" if isinstance(name, str) else f"{kind} #{key + 1}")
            fields.clear()
        elif key not in ("districts", "schools") or index == len(loc) - 1:
            fields.append(str(key))
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "missing"
    elif error["type"] != "value_error" and "input" in error:
        message = f"{message} (got {error['input']!r})"
    return ": ".join([*([", ".join(where)] if where else []),
                      *([".".join(fields)] if fields else []), message])
