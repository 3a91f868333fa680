"""The console's session: a signed cookie holding who is signed in (the principal), how (the
district's OpenID provider and the ID token, for signing out there too), and the session's CSRF
token. The API tokens the pages call the services with are made from it (tokens.py), short-lived.

The cookie is a JWT signed with the console's own secret (not the API's), HttpOnly,
SameSite=Lax, and Secure behind TLS. Any sign-in (OpenID Connect, or the development one) ends
in ``signed_in(principal, hours)``; pages only ever ask for the current principal."""

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import jwt
from fastapi import Request, Response

from runtime.auth import Principal, Role

COOKIE = "ensemble_session"
AUDIENCE = "ensemble-console"
ANONYMOUS_HOURS = 2.0


@dataclass(frozen=True)
class Session:
    csrf: str
    expires: datetime
    principal: Principal | None = None
    provider: str | None = None  # "<district>/<provider id>" of an OpenID Connect sign-in
    id_token: str | None = None  # the provider's, as the hint when signing out there
    expired: bool = False  # a signed-in session that ran out: say so on the sign-in page
    fresh: bool = False  # made for this request (none came, or it was not valid): send it


def anonymous(*, expired: bool = False) -> Session:
    return Session(csrf=secrets.token_urlsafe(24), expired=expired, fresh=True,
                   expires=datetime.now(UTC) + timedelta(hours=ANONYMOUS_HOURS))


def signed_in(principal: Principal, hours: float, *, provider: str | None = None,
              id_token: str | None = None) -> Session:
    # A new CSRF token at sign-in: one seen before it (by anyone) is worth nothing after.
    return Session(csrf=secrets.token_urlsafe(24), principal=principal, provider=provider,
                   id_token=id_token, expires=datetime.now(UTC) + timedelta(hours=hours))


def encode(secret: str, session: Session) -> str:
    claims: dict[str, Any] = {"aud": AUDIENCE, "exp": session.expires, "csrf": session.csrf}
    if session.principal:
        p = session.principal
        claims |= {"sub": p.subject, "role": p.role.value, "district": p.district,
                   "schools": sorted(p.schools), "partner_id": p.partner_id,
                   "provider": session.provider, "id_token": session.id_token}
    return jwt.encode(claims, secret, algorithm="HS256")


def decode(secret: str, value: str | None) -> Session:
    """The session in the cookie, or a new anonymous one (none, forged, or expired)."""
    if not value:
        return anonymous()
    try:
        claims = jwt.decode(value, secret, algorithms=["HS256"], audience=AUDIENCE,
                            options={"require": ["exp", "aud", "csrf"]})
    except jwt.ExpiredSignatureError:
        return anonymous(expired=_was_signed_in(secret, value))
    except jwt.PyJWTError:
        return anonymous()
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    if "role" not in claims:
        return Session(csrf=str(claims["csrf"]), expires=expires)
    try:
        principal = Principal(subject=str(claims["sub"]), role=Role(claims["role"]),
                              district=str(claims["district"]),
                              schools=frozenset(claims.get("schools") or ()),
                              partner_id=claims.get("partner_id"))
    except (KeyError, ValueError):
        return anonymous()
    return Session(csrf=str(claims["csrf"]), expires=expires, principal=principal,
                   provider=claims.get("provider"), id_token=claims.get("id_token"))


def _was_signed_in(secret: str, value: str) -> bool:
    try:
        claims = jwt.decode(value, secret, algorithms=["HS256"], audience=AUDIENCE,
                            options={"verify_exp": False})
    except jwt.PyJWTError:
        return False
    return "role" in claims


def is_tls(request: Request) -> bool:
    # uvicorn applies X-Forwarded-Proto from trusted proxies to the scheme.
    return request.url.scheme == "https"


def write(response: Response, secret: str, session: Session, *, secure: bool) -> None:
    max_age = max(0, int((session.expires - datetime.now(UTC)).total_seconds()))
    response.set_cookie(COOKIE, encode(secret, session), max_age=max_age, httponly=True,
                        samesite="lax", secure=secure, path="/")


def csrf_ok(session: Session, submitted: object) -> bool:
    return isinstance(submitted, str) and hmac.compare_digest(session.csrf.encode(),
                                                              submitted.encode())


def safe_next(value: str | None) -> str:
    """Only a path of this site: never an open redirect to another one."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def sign_in_url(next_path: str) -> str:
    return f"/sign-in?next={quote(safe_next(next_path), safe='/')}"
