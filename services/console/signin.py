"""Signing in and out of the console: OpenID Connect with each district's providers (the
district file's ``sign_in``), the development sign-in (ENSEMBLE_DEV_SIGN_IN only), sign-out
here and at the provider, and the console's public keys (/.well-known/jwks.json) that the
services check its API tokens with. Every sign-in, refusal and sign-out goes into the district's
sign-in audit trail (audit.py)."""

import hmac
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from runtime.auth import Principal, Role
from runtime.districts import District, SignInProvider
from services.console import session as sessions
from services.console.audit import SignInAudit
from services.console.i18n import choose_language
from services.console.oidc import (
    FLOW_COOKIE,
    FLOW_MINUTES,
    Flow,
    OpenIdClient,
    SignInFailed,
    map_claims,
    subject_of,
)
from services.console.pages import (
    SIGN_IN_ROLES,
    Console,
    ConsoleDep,
    FormDep,
    PrincipalDep,
    SessionDep,
    _write_cookie,
    redirect,
    render,
)

router = APIRouter()
CALLBACK = "/sign-in/callback"
MAX_HINT_CHARS = 1800


def _providers(c: Console) -> list[tuple[District, SignInProvider]]:
    return [(d, p) for d in c.districts.districts for p in d.sign_in]


def _page(request: Request, c: Console, status: int, next_path: str, *, expired: bool = False,
          errors: dict[str, str] | None = None, values: dict[str, Any] | None = None
          ) -> HTMLResponse:
    return render(request, "sign_in.html.j2", status, next=next_path,
                  dev=c.settings.dev_sign_in, expired=expired, roles=SIGN_IN_ROLES,
                  providers=_providers(c), errors=errors or {}, values=values or {})


def _oidc(c: Console) -> OpenIdClient:
    assert c.oidc is not None
    return c.oidc


def _audit(c: Console) -> SignInAudit:
    assert c.audit is not None
    return c.audit


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request, c: ConsoleDep, s: SessionDep,
                       next: str = "/") -> HTMLResponse:
    """The providers of every district, and in development the development form. Nothing to
    sign in with at all is a 403 that says so."""
    usable = c.settings.dev_sign_in or bool(_providers(c))
    return _page(request, c, 200 if usable else 403, sessions.safe_next(next),
                 expired=s.expired)


@router.get("/sign-in/{district_id}/{provider_id}", response_model=None)
async def sign_in_start(request: Request, district_id: str, provider_id: str, c: ConsoleDep,
                        next: str = "/") -> Response:
    """Off to the provider: state, nonce and the PKCE verifier in a signed cookie of their
    own, the S256 challenge, the state and the nonce in the request."""
    district = c.districts.get(district_id)
    provider = district.provider(provider_id) if district else None
    if district is None or provider is None:
        return render(request, "sign_in_refused.html.j2", 404, kind="unknown_provider",
                      district=None)
    flow = Flow.new(district.id, provider.id, sessions.safe_next(next))
    try:
        metadata = await _oidc(c).metadata(provider)
    except SignInFailed as exc:
        _audit(c).record(district.id, "refused", provider=provider.id, reason=exc.reason)
        return render(request, "sign_in_refused.html.j2", 502, kind=exc.kind, district=district)
    url = _oidc(c).authorization_url(provider, metadata, flow, _callback_url(c))
    response = redirect(url)
    response.status_code = 302
    response.set_cookie(FLOW_COOKIE, flow.encode(c.settings.console_session_secret),
                        max_age=FLOW_MINUTES * 60, httponly=True, samesite="lax", path="/sign-in",
                        secure=sessions.is_tls(request) or c.settings.console_secure_cookies)
    return response


def _callback_url(c: Console) -> str:
    """The redirect URI registered with every provider."""
    return f"{c.settings.public_base_url.rstrip('/')}{CALLBACK}"


@router.get(CALLBACK, response_model=None)
async def sign_in_callback(request: Request, c: ConsoleDep) -> Response:
    """Back from the provider: the state must be the one sent, then the code is exchanged
    (with the PKCE verifier), the ID token checked (with the nonce), the claims mapped."""
    query = request.query_params
    try:
        flow = Flow.decode(c.settings.console_session_secret, request.cookies.get(FLOW_COOKIE))
    except SignInFailed as exc:
        return _refused(request, c, None, None, exc)
    district = c.districts.get(flow.district)
    provider = district.provider(flow.provider) if district else None
    if district is None or provider is None:
        return _refused(request, c, None, None, SignInFailed("state", "provider_gone"))
    try:
        if not hmac.compare_digest(flow.state.encode(), query.get("state", "").encode()):
            raise SignInFailed("state", "state_mismatch")
        if query.get("error") or not query.get("code"):
            error = "".join(ch for ch in query.get("error", "") if ch.isalnum() or ch == "_")
            raise SignInFailed("provider", f"provider_{error or 'no_code'}"[:64])
        claims, id_token = await _verified_claims(c, provider, flow, str(query["code"]))
    except SignInFailed as exc:
        return _refused(request, c, district, provider, exc)
    who = map_claims(district, provider, claims)
    if who is None:
        _audit(c).record(district.id, "refused", provider=provider.id,
                         subject=subject_of(provider, claims), reason="no_role")
        response = render(request, "sign_in_refused.html.j2", 403, kind="no_role",
                          district=district)
    else:
        _audit(c).record(district.id, "sign_in", provider=provider.id, subject=who.subject,
                         role=who.role.value)
        # The ID token rides in the session cookie as the sign-out hint, unless it is so large
        # (an Entra token with many groups) that the cookie would pass browsers' 4 KB.
        hint = id_token if len(id_token) <= MAX_HINT_CHARS else None
        response = start_session(request, c, who, flow.next_path,
                                 provider=f"{district.id}/{provider.id}", id_token=hint)
    response.delete_cookie(FLOW_COOKIE, path="/sign-in")
    return response


async def _verified_claims(c: Console, provider: SignInProvider, flow: Flow,
                           code: str) -> tuple[dict[str, Any], str]:
    oidc = _oidc(c)
    metadata = await oidc.metadata(provider)
    tokens = await oidc.exchange(provider, metadata, code, flow, _callback_url(c))
    id_token = str(tokens["id_token"])
    claims = await oidc.id_claims(provider, metadata, id_token, flow)
    return await oidc.userinfo(metadata, tokens.get("access_token"), claims), id_token


def _refused(request: Request, c: Console, district: District | None,
             provider: SignInProvider | None, exc: SignInFailed) -> Response:
    if district is not None:
        _audit(c).record(district.id, "refused", provider=provider.id if provider else None,
                         reason=exc.reason)
    status = 400 if exc.kind == "state" else 502
    response = render(request, "sign_in_refused.html.j2", status, kind=exc.kind,
                      district=district)
    response.delete_cookie(FLOW_COOKIE, path="/sign-in")
    return response


@router.post("/sign-in", response_model=None)
async def sign_in(request: Request, c: ConsoleDep, form: FormDep) -> Response:
    """Development sign-in: pick a role, district, schools or partner, as `ensemble token`
    does. Refused unless the deployment is in development mode (ENSEMBLE_DEV_SIGN_IN)."""
    next_path = sessions.safe_next(str(form.get("next") or "/"))
    if not c.settings.dev_sign_in:
        return _page(request, c, 403, next_path)
    values = {k: str(form.get(k) or "").strip() for k in ("role", "district", "partner_id",
                                                            "subject")}
    schools = [str(v) for v in form.getlist("schools")]
    errors = _dev_errors(c, request, values, schools)
    if errors:
        return _page(request, c, 422, next_path, errors=errors,
                     values=values | {"schools": schools})
    # The user id goes into tokens and the audit trail: an id's characters only.
    subject = "".join(ch for ch in values["subject"] if ch.isalnum() or ch in "_.:@-")[:128]
    who = Principal(subject=subject or f"dev-{values['role']}",
                    role=Role(values["role"]), district=values["district"],
                    schools=frozenset(schools) if values["role"] == Role.coordinator
                    else frozenset(),
                    partner_id=values["partner_id"] if values["role"] == Role.partner else None)
    return start_session(request, c, who, next_path)


def _dev_errors(c: Console, request: Request, values: dict[str, str],
                schools: list[str]) -> dict[str, str]:
    _ = c.translations[choose_language(request)].gettext
    errors: dict[str, str] = {}
    district = c.districts.get(values["district"])
    if values["role"] not in {r.value for r in SIGN_IN_ROLES}:
        errors["role"] = _("Choose a role.")
    if district is None:
        errors["district"] = _("Choose a district.")
    elif unknown := [x for x in schools if district.school(x) is None]:
        errors["schools"] = _("Not a school of {district}: {schools}", district=district.name,
                              schools=", ".join(unknown))
    if values["role"] == Role.coordinator and not schools:
        errors["schools"] = _("A coordinator covers at least one school.")
    if values["role"] == Role.partner and not values["partner_id"]:
        errors["partner_id"] = _("A partner's staff name their partner (its id).")
    return errors


def start_session(request: Request, c: Console, who: Principal, next_path: str, *,
                  provider: str | None = None, id_token: str | None = None) -> Response:
    """Where every sign-in ends: the principal in the signed cookie (the API tokens are made
    from it, short-lived, as the pages need them)."""
    response = redirect(next_path)
    _write_cookie(request, response, sessions.signed_in(
        who, c.settings.console_session_hours, provider=provider, id_token=id_token))
    return response


@router.post("/sign-out", response_model=None)
async def sign_out(request: Request, c: ConsoleDep, s: SessionDep, _form: FormDep) -> Response:
    """Ends the console's session and, when the person signed in with a provider that has an
    end_session_endpoint, sends the browser there to end that one too."""
    after = f"{c.settings.public_base_url.rstrip('/')}/sign-in"
    target: str | None = None
    if s.principal is not None and s.provider:
        district_id, _, provider_id = s.provider.partition("/")
        district = c.districts.get(district_id)
        provider = district.provider(provider_id) if district else None
        if provider is not None:
            target = await _oidc(c).end_session_url(provider, s.id_token, after)
            _audit(c).record(district_id, "sign_out", provider=provider_id,
                             subject=s.principal.subject)
    ended = sessions.anonymous()
    if target is None:
        response = redirect("/sign-in")
        _write_cookie(request, response, ended)
        return response
    # A page, not a redirect: the pages' CSP (form-action 'self') rightly stops a form's
    # answer from redirecting to another site. It goes on to the provider by itself.
    request.state.console_session = ended
    return render(request, "signed_out.html.j2", logout_url=target)


@router.get("/district/sign-ins", response_class=HTMLResponse)
async def sign_in_trail(request: Request, c: ConsoleDep, p: PrincipalDep) -> HTMLResponse:
    """A district admin's view of the district's sign-in audit trail, newest first."""
    if p.role != Role.district_admin:
        return render(request, "error.html.j2", 403, kind="forbidden", message="")
    return render(request, "sign_ins.html.j2", entries=_audit(c).recent(p.district))


@router.get("/.well-known/jwks.json", include_in_schema=False)
async def jwks(c: ConsoleDep) -> JSONResponse:
    """The public keys the services check the console's API tokens with (two during a key
    rotation). Empty in development, where tokens are HS256 with the shared secret."""
    return JSONResponse(c.api_tokens().jwks(), headers={"Cache-Control": "max-age=300"})
