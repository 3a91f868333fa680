"""OpenID Connect for the console: the authorization code flow with PKCE (S256), ``state`` and
``nonce``, against each district's providers (the district file's ``sign_in``). The provider's
discovery document and keys are fetched and cached; the ID token is checked (signature, issuer,
audience, expiry, nonce) before its claims, with the userinfo endpoint's, are mapped to a role,
schools and partner by the district's rules. PKCE and the URIs through authlib, JOSE through
joserfc (authlib's JOSE library)."""

import base64
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jws
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from runtime.auth import Principal, Role
from runtime.districts import District, RoleRule, SignInProvider

FLOW_COOKIE = "ensemble_sign_in"
FLOW_AUDIENCE = "ensemble-sign-in"
FLOW_MINUTES = 10  # from leaving for the provider to coming back
METADATA_SECONDS = 3600
ID_TOKEN_ALGS = ("RS256", "ES256", "PS256", "RS384", "ES384", "RS512", "EdDSA")
RANK = {"district_admin": 0, "coordinator": 1, "partner": 2}


class SignInFailed(Exception):
    """The flow cannot finish: ``kind`` says for the page (state, provider), ``reason`` for the
    audit trail (a code, never a person's data)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


# --- claims to a principal (pure) -------------------------------------------------------------


def _matches(rule: RoleRule, claims: dict[str, Any]) -> bool:
    value = claims.get(rule.claim)
    values = [str(v) for v in value] if isinstance(value, list) else (
        [] if value is None else [str(value)])
    if rule.equals is not None:
        return rule.equals in values
    assert rule.ends_with is not None
    return any(v.lower().endswith(rule.ends_with.lower()) for v in values)


def subject_of(provider: SignInProvider, claims: dict[str, Any]) -> str:
    """The person's user id in Ensemble: the configured claim (an id's characters only)."""
    raw = claims.get(provider.subject_claim) or claims.get("sub") or ""
    cleaned = "".join(ch for ch in str(raw) if ch.isalnum() or ch in "_.:@-")[:128]
    return cleaned or "unknown"


def map_claims(district: District, provider: SignInProvider,
               claims: dict[str, Any]) -> Principal | None:
    """The principal the district's rules give these claims, or None: no rule matches. The
    highest role matched wins; a coordinator gets the schools of every coordinator rule."""
    matched = [r for r in provider.roles if _matches(r, claims)]
    if not matched:
        return None
    best = min(RANK[r.role] for r in matched)
    chosen = [r for r in matched if RANK[r.role] == best]
    role = Role(chosen[0].role)
    schools = frozenset(s for r in chosen for s in r.schools) if role == Role.coordinator \
        else frozenset()
    return Principal(subject=subject_of(provider, claims), role=role, district=district.id,
                     schools=schools,
                     partner_id=chosen[0].partner_id if role == Role.partner else None)


# --- the flow's own cookie --------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    """What the console must remember between sending the browser to the provider and its
    return: kept in a signed, HttpOnly cookie of its own for ten minutes."""

    district: str
    provider: str
    state: str
    nonce: str
    verifier: str
    next_path: str

    @staticmethod
    def new(district: str, provider: str, next_path: str) -> "Flow":
        return Flow(district, provider, secrets.token_urlsafe(24), secrets.token_urlsafe(24),
                    secrets.token_urlsafe(48), next_path)

    def encode(self, secret: str) -> str:
        claims = {"aud": FLOW_AUDIENCE, "exp": int(time.time()) + FLOW_MINUTES * 60,
                  "d": self.district, "p": self.provider, "s": self.state, "n": self.nonce,
                  "v": self.verifier, "next": self.next_path}
        return jwt.encode(claims, secret, algorithm="HS256")

    @staticmethod
    def decode(secret: str, value: str | None) -> "Flow":
        if not value:
            raise SignInFailed("state", "no_flow_cookie")
        try:
            c = jwt.decode(value, secret, algorithms=["HS256"], audience=FLOW_AUDIENCE)
            return Flow(c["d"], c["p"], c["s"], c["n"], c["v"], c["next"])
        except (jwt.PyJWTError, KeyError) as exc:
            raise SignInFailed("state", f"flow_cookie_{type(exc).__name__}") from None


# --- the provider ------------------------------------------------------------------------------


def client_secret(provider: SignInProvider) -> str | None:
    return os.environ.get(provider.client_secret_env) if provider.client_secret_env else None


@dataclass
class OpenIdClient:
    """Talks to the providers: discovery, keys, the token and userinfo endpoints."""

    http: httpx.AsyncClient
    _metadata: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    _keys: dict[str, KeySet] = field(default_factory=dict)

    async def metadata(self, provider: SignInProvider) -> dict[str, Any]:
        cached = self._metadata.get(provider.issuer)
        if cached and time.monotonic() - cached[0] < METADATA_SECONDS:
            return cached[1]
        url = f"{provider.issuer}/.well-known/openid-configuration"
        try:
            answer = await self.http.get(url)
            answer.raise_for_status()
            found = answer.json()
        except (httpx.HTTPError, ValueError):
            raise SignInFailed("provider", "discovery_failed") from None
        if not isinstance(found, dict) or found.get("issuer", "").rstrip("/") != provider.issuer:
            raise SignInFailed("provider", "discovery_issuer_mismatch")
        self._metadata[provider.issuer] = (time.monotonic(), found)
        return found

    def authorization_url(self, provider: SignInProvider, metadata: dict[str, Any],
                          flow: Flow, redirect_uri: str) -> str:
        return str(prepare_grant_uri(
            metadata["authorization_endpoint"], provider.client_id, "code",
            redirect_uri=redirect_uri, scope=" ".join(provider.scopes), state=flow.state,
            nonce=flow.nonce, code_challenge=create_s256_code_challenge(flow.verifier),
            code_challenge_method="S256"))

    async def exchange(self, provider: SignInProvider, metadata: dict[str, Any], code: str,
                       flow: Flow, redirect_uri: str) -> dict[str, Any]:
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": redirect_uri, "code_verifier": flow.verifier}
        headers = {"Accept": "application/json"}
        secret = client_secret(provider)
        if secret is None:
            form["client_id"] = provider.client_id  # a public client: PKCE is its proof
        else:  # client_secret_basic (RFC 6749 2.3.1: both parts form-urlencoded)
            pair = f"{_form(provider.client_id)}:{_form(secret)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        try:
            answer = await self.http.post(metadata["token_endpoint"], data=form,
                                          headers=headers)
            body = answer.json()
        except (httpx.HTTPError, ValueError):
            raise SignInFailed("provider", "token_endpoint_failed") from None
        if answer.status_code != 200 or not isinstance(body, dict) or "id_token" not in body:
            error = body.get("error") if isinstance(body, dict) else None
            raise SignInFailed("provider", f"token_refused_{error or answer.status_code}")
        return body

    async def _key_set(self, metadata: dict[str, Any], kid: str | None,
                       forced: bool = False) -> KeySet:
        uri = metadata["jwks_uri"]
        if forced or uri not in self._keys:
            try:
                answer = await self.http.get(uri)
                answer.raise_for_status()
                self._keys[uri] = KeySet.import_key_set(answer.json())
            except (httpx.HTTPError, ValueError, JoseError):
                raise SignInFailed("provider", "jwks_failed") from None
        keys = self._keys[uri]
        if kid and not forced and not any(k.kid == kid for k in keys.keys):
            return await self._key_set(metadata, kid, forced=True)
        return keys

    async def id_claims(self, provider: SignInProvider, metadata: dict[str, Any],
                        id_token: str, flow: Flow) -> dict[str, Any]:
        """The ID token's claims, once signature, iss, aud, exp, iat and nonce check out."""
        try:
            header = jws.extract_compact(id_token.encode()).headers()
            kid = header.get("kid")
            keys = await self._key_set(metadata, kid if isinstance(kid, str) else None)
            claims = jose_jwt.decode(id_token, keys, algorithms=list(ID_TOKEN_ALGS)).claims
            JWTClaimsRegistry(
                leeway=60, iss={"essential": True, "value": provider.issuer},
                aud={"essential": True, "value": provider.client_id},
                exp={"essential": True}, iat={"essential": True}, sub={"essential": True},
                nonce={"essential": True, "value": flow.nonce}).validate(claims)
        except (JoseError, ValueError) as exc:
            raise SignInFailed("provider", f"id_token_{type(exc).__name__}") from None
        auds = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(auds) > 1 and claims.get("azp") != provider.client_id:
            raise SignInFailed("provider", "id_token_azp")
        return claims

    async def userinfo(self, metadata: dict[str, Any], access_token: str | None,
                       claims: dict[str, Any]) -> dict[str, Any]:
        """The ID token's claims with the userinfo endpoint's (groups, roles) added, when the
        provider has one and its answer is about the same person."""
        endpoint = metadata.get("userinfo_endpoint")
        if not endpoint or not access_token:
            return claims
        try:
            answer = await self.http.get(endpoint,
                                         headers={"Authorization": f"Bearer {access_token}"})
            info = answer.json() if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            info = None
        if not isinstance(info, dict) or info.get("sub") != claims["sub"]:
            return claims
        return {**info, **claims}

    async def end_session_url(self, provider: SignInProvider, id_token: str | None,
                              after: str) -> str | None:
        """Where to send the browser to sign out at the provider too, if it says how."""
        try:
            metadata = await self.metadata(provider)
        except SignInFailed:
            return None
        endpoint = metadata.get("end_session_endpoint")
        if not endpoint:
            return None
        params = {"client_id": provider.client_id, "post_logout_redirect_uri": after}
        if id_token:
            params["id_token_hint"] = id_token
        return str(add_params_to_uri(endpoint, list(params.items())))


def _form(value: str) -> str:
    return quote(value, safe="")
