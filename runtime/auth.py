"""Who is asking: bearer tokens (signed JWTs) carrying a role and a scope, checked once where a
service's routes are mounted, and turned into a data-layer scope (runtime.tenancy) so every query
of the request is limited to the caller's district, schools or partner."""

import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import jwt
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.security.utils import get_authorization_scheme_param

from contracts.envelope import contains_nul
from runtime.errors import DomainError
from runtime.keys import KeysError, PublicKeys, SigningKeys
from runtime.tenancy import Scope, set_scope

ISSUER = "ensemble"
AUDIENCE = "ensemble-api"


class Role(StrEnum):
    district_admin = "district_admin"  # the whole district
    coordinator = "coordinator"  # their schools
    leadership = "leadership"  # the district's data packs (insights) only
    partner = "partner"  # its own matches
    integrator = "integrator"  # events only: webhooks, no student records over HTTP
    operator = "operator"  # metrics and health only


class Unauthorized(DomainError):
    status_code = 401


class Forbidden(DomainError):
    status_code = 403


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    district: str
    schools: frozenset[str] = field(default_factory=frozenset)
    partner_id: str | None = None

    def scope(self) -> Scope:
        return Scope(
            district=self.district,
            schools=self.schools if self.role == Role.coordinator else None,
            partner_id=self.partner_id if self.role == Role.partner else None,
        )


def caller(request: Request, fallback: str) -> str:
    """Who is asking: the bearer token's subject when the host checks tokens."""
    principal = getattr(request.state, "principal", None)
    return str(getattr(principal, "subject", None) or fallback)[:100]


def issue_token(
    key: str | SigningKeys,
    *,
    subject: str,
    role: Role | str,
    district: str,
    schools: Iterable[str] = (),
    partner_id: str | None = None,
    ttl: timedelta = timedelta(hours=8),
) -> str:
    """A bearer token: signed with the console's keys (ES256/RS256, its ``kid`` in the header),
    or in development with the shared secret (HS256)."""
    role = Role(role)
    if role == Role.coordinator and not schools:
        raise ValueError("a coordinator token names its schools")
    if role == Role.partner and not partner_id:
        raise ValueError("a partner token names its partner")
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + ttl,
        "role": role.value, "district": district, "schools": sorted(schools),
    }
    if partner_id:
        claims["partner_id"] = partner_id
    if isinstance(key, SigningKeys):
        return key.sign({k: int(v.timestamp()) if isinstance(v, datetime) else v
                         for k, v in claims.items()})
    return jwt.encode(claims, key, algorithm="HS256")


def _principal(claims: Mapping[str, Any]) -> Principal:
    return Principal(
        subject=str(claims["sub"]),
        role=Role(claims["role"]),
        district=str(claims["district"]),
        schools=frozenset(claims.get("schools") or ()),
        partner_id=claims.get("partner_id"),
    )


def verify_token(secret: str, token: str) -> Principal:
    """A development (HS256) token's principal."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=AUDIENCE,
                            issuer=ISSUER, options={"require": ["exp", "sub", "aud", "iss"]})
        return _principal(claims)
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise Unauthorized(f"invalid token: {type(exc).__name__}") from exc


LEEWAY_SECONDS = 30  # clocks of the console and a service may differ by this much


def check_claims(claims: Mapping[str, Any], now: float | None = None) -> Principal:
    """The registered claims of an asymmetric token: ours (iss, aud), unexpired, for someone."""
    now = datetime.now(UTC).timestamp() if now is None else now
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    exp = claims.get("exp")
    if claims.get("iss") != ISSUER or AUDIENCE not in auds:
        raise Unauthorized("invalid token: not issued by Ensemble for its APIs")
    if not isinstance(exp, int | float) or exp + LEEWAY_SECONDS < now:
        raise Unauthorized("invalid token: ExpiredSignatureError")
    nbf = claims.get("iat")
    if isinstance(nbf, int | float) and nbf - LEEWAY_SECONDS > now:
        raise Unauthorized("invalid token: issued in the future")
    try:
        return _principal(claims)
    except (KeyError, ValueError) as exc:
        raise Unauthorized(f"invalid token: {type(exc).__name__}") from exc


class TokenVerifier:
    """What a service checks bearer tokens with: the published JWKS in a deployment (HS256
    refused), the shared development secret otherwise."""

    def __init__(self, secret: str | None = None, jwks: PublicKeys | None = None) -> None:
        if (secret is None) == (jwks is None):
            raise ValueError("either a JWKS or (development) a secret")
        self.secret = secret
        self.jwks = jwks

    async def verify(self, token: str) -> Principal:
        if self.jwks is None:
            assert self.secret is not None
            return verify_token(self.secret, token)
        try:
            claims = await self.jwks.decode(token)
        except KeysError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        return check_claims(claims)


Rule = frozenset[Role]
STAFF: Rule = frozenset({Role.district_admin, Role.coordinator})


@dataclass
class Policy:
    """Which roles may call which routes of a service. Unlisted reads are for staff, unlisted
    writes for staff too; partner, integrator and operator only where a service says so."""

    rules: Mapping[tuple[str, str], Rule] = field(default_factory=dict)
    # Routes that authenticate otherwise (provider webhooks with signatures, signed links).
    public: frozenset[tuple[str, str]] = frozenset()

    def allowed(self, method: str, path: str) -> Rule:
        return self.rules.get((method, path), STAFF)


def authorizer(verifier: str | TokenVerifier, policy: Policy,  # type: ignore[no-untyped-def]
               prefix: str = "/api/v1"):
    check = verifier if isinstance(verifier, TokenVerifier) else TokenVerifier(secret=verifier)

    async def authorize(request: Request) -> Principal | None:
        route = request.scope.get("route")
        path = getattr(route, "path", request.url.path).removeprefix(prefix)
        if (request.method, path) in policy.public:
            await _refuse_nul(request)
            return None
        scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("a bearer token is required")
        principal = await check.verify(token)
        if principal.role not in policy.allowed(request.method, path):
            raise Forbidden(f"a {principal.role} may not {request.method} {path}")
        await _refuse_nul(request)
        await _check_named_district(request, principal)
        request.state.principal = principal
        set_scope(principal.scope())
        return principal

    return authorize


async def _refuse_nul(request: Request) -> None:
    """U+0000 in a path, a query or a JSON or form body is refused with a 422 here, not with a
    500 when PostgreSQL refuses to store it."""
    where: list[str | int] | None = None
    if "\x00" in request.url.path:
        where = ["path"]
    elif any("\x00" in k or "\x00" in v for k, v in request.query_params.multi_items()):
        where = ["query"]
    else:
        kind = request.headers.get("content-type", "")
        if kind.startswith("application/json"):
            body = await request.body()
            if b"\\u0000" in body:
                with contextlib.suppress(ValueError):
                    where = ["body"] if contains_nul(json.loads(body)) else None
        elif kind.startswith("application/x-www-form-urlencoded"):
            body = await request.body()
            where = ["body"] if b"%00" in body or b"\x00" in body else None
    if where:
        raise RequestValidationError([{"loc": where, "type": "value_error",
                                       "msg": "text must not hold the NUL character (U+0000)"}])


async def _check_named_district(request: Request, principal: Principal) -> None:
    """A request naming another district, or a school or partner outside the caller's scope
    (a coordinator's schools, a partner's own id), is refused outright, before any query runs.
    Rows a request reaches by id are limited by the data layer (runtime.tenancy) instead."""
    body: Any = None
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            body = None  # not reached: the host answers 400 for a body that is not JSON
        if isinstance(body, dict):
            request.state.json_body = body
    body = body if isinstance(body, dict) else {}
    query = request.query_params
    named = [query.get("district_id"), body.get("district_id")]
    # A school in the path (/schools/{school_id}/...) or named as an in-school support's own.
    schools = [query.get("school_id"), body.get("school_id"), body.get("in_school_of"),
               request.path_params.get("school_id")]
    if isinstance(body.get("schools"), list):  # a partner registered for these schools
        schools += body["schools"]
    partners = [query.get("partner_id"), body.get("partner_id")]
    # Strings only: anything else (a list, a number) is for the body's validation to refuse
    # with a 422 naming the field.
    if _strings(named) - {principal.district}:
        raise Forbidden("that district is not yours")
    if principal.role == Role.coordinator and _strings(schools) - principal.schools:
        raise Forbidden("that school is not one of yours")
    if principal.role == Role.partner and _strings(partners) - {principal.partner_id}:
        raise Forbidden("a partner acts for itself only")


def _strings(values: Iterable[Any]) -> set[str]:
    return {v for v in values if isinstance(v, str)}
