"""The console's pages: a coordinator's day (Today, referrals, families), a partner's matched
referrals, sign-in and sign-out. Every route is a module-level function; what it needs (the
signed-in person, their API client, the checked form) comes through FastAPI dependencies."""

import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment
from starlette.datastructures import FormData

from contracts.taxonomy import Consent, Need, Outcome, Urgency
from runtime.auth import Principal, Role
from runtime.districts import Districts
from services.console import session as sessions
from services.console.api_client import Api, ApiError
from services.console.audit import SignInAudit
from services.console.i18n import LANG_COOKIE, Translator, choose_language
from services.console.oidc import OpenIdClient
from services.console.settings import ConsoleSettings
from services.console.tokens import ApiTokens
from services.console.views import (
    CLOSED,
    URGENCY_ORDER,
    actions_for,
    latest_match,
    timeline_rows,
)

router = APIRouter()

STAFF = (Role.district_admin, Role.coordinator)
SIGN_IN_ROLES = (Role.coordinator, Role.district_admin, Role.partner)
CANCEL_REASONS = ("opened_in_error", "duplicate", "family_moved", "need_resolved", "other")
DECLINE_REASONS = ("no_capacity", "not_eligible", "outside_service_area", "cannot_serve_language",
                   "other")


@dataclass
class Console:
    """What the pages share: settings, the districts file, templates, one HTTP client."""

    settings: ConsoleSettings
    districts: Districts
    templates: Environment
    http: httpx.AsyncClient
    translations: dict[str, Translator] = field(default_factory=dict)
    tokens: ApiTokens | None = None  # set by service.build
    oidc: OpenIdClient | None = None
    audit: SignInAudit | None = None

    def api_tokens(self) -> ApiTokens:
        assert self.tokens is not None
        return self.tokens


# --- errors the pages turn into answers ------------------------------------------------------


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class CsrfRefused(Exception):
    pass


# --- dependencies ----------------------------------------------------------------------------


def console(request: Request) -> Console:
    return request.app.state.console  # type: ignore[no-any-return]


ConsoleDep = Annotated[Console, Depends(console)]


def current_session(request: Request, c: ConsoleDep) -> sessions.Session:
    cached = getattr(request.state, "console_session", None)
    if cached is None:
        cached = sessions.decode(c.settings.console_session_secret,
                                 request.cookies.get(sessions.COOKIE))
        request.state.console_session = cached
    return cached  # type: ignore[no-any-return]


SessionDep = Annotated[sessions.Session, Depends(current_session)]


def _return_path(request: Request) -> str:
    """Where to come back after signing in: this page, or for a form the page it was on."""
    if request.method == "GET":
        return request.url.path + (f"?{request.url.query}" if request.url.query else "")
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc and referer.netloc != request.url.netloc:
        return "/"
    return referer.path + (f"?{referer.query}" if referer.query else "") or "/"


def principal(request: Request, s: SessionDep) -> Principal:
    """The current principal, the only thing pages know about who is asking."""
    if s.principal is None:
        raise SignInRequired(_return_path(request))
    return s.principal


PrincipalDep = Annotated[Principal, Depends(principal)]


def api(c: ConsoleDep, s: SessionDep, _p: PrincipalDep) -> Api:
    assert s.principal is not None
    return Api(c.http, c.api_tokens().token_for(s.principal), c.settings.base_url_of)


ApiDep = Annotated[Api, Depends(api)]


async def checked_form(request: Request, s: SessionDep) -> FormData:
    """The posted form, refused unless it carries this session's CSRF token."""
    form = await request.form()
    if not sessions.csrf_ok(s, form.get("csrf")):
        raise CsrfRefused
    return form


FormDep = Annotated[FormData, Depends(checked_form)]


async def signed_form(_p: PrincipalDep, form: FormDep) -> FormData:
    """A signed-in person's form: an ended session is sent to sign in before any CSRF check."""
    return form


SignedFormDep = Annotated[FormData, Depends(signed_form)]


# --- rendering -------------------------------------------------------------------------------


# Pages hold students' and families' details: not cached, not framed by another site, no
# script at all (the pages need none), forms posted only here.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    c: Console = request.app.state.console
    s = current_session(request, c)
    t = c.translations[choose_language(request)]
    html = c.templates.get_template(name).render(
        _=t.gettext, t=t, principal=s.principal, csrf=s.csrf, path=request.url.path,
        full_path=_return_path(request) if request.method == "GET" else request.url.path,
        districts=c.districts, school_name=lambda sid: _school_name(c, s.principal, sid),
        when=lambda value, school=None: t.when(value, school_zone(c, s.principal, school)),
        **context)
    response = HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
    if s.fresh:  # a new anonymous session goes back in the answer's cookie
        _write_cookie(request, response, s)
    return response


def _write_cookie(request: Request, response: Response, s: sessions.Session) -> None:
    c: Console = request.app.state.console
    sessions.write(response, c.settings.console_session_secret, s,
                   secure=sessions.is_tls(request) or c.settings.console_secure_cookies)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)  # after a POST, the browser GETs the page


def school_zone(c: Console, p: Principal | None, school: str | None) -> str:
    district = c.districts.get(p.district) if p else None
    if district is None:
        return "UTC"
    found = district.school(school) if school else None
    return (found.timezone if found else None) or district.timezone


def _school_name(c: Console, p: Principal | None, school_id: str) -> str:
    found = c.districts.school(p.district, school_id) if p else None
    return found.name if found else school_id


def my_schools(c: Console, p: Principal) -> list[tuple[str, str]]:
    district = c.districts.get(p.district)
    schools = district.schools if district else []
    return [(s.id, s.name) for s in schools if p.role != Role.coordinator or s.id in p.schools]


async def error_page(request: Request, exc: Exception) -> Response:
    """What a page shows when an API refuses, a form lacks its CSRF token, or a session ended."""
    if isinstance(exc, SignInRequired):
        return redirect(sessions.sign_in_url(exc.next_path))
    if isinstance(exc, CsrfRefused):
        return render(request, "error.html.j2", 403, kind="csrf")
    assert isinstance(exc, ApiError)
    if exc.status == 401:  # the API token ran out before the cookie did
        return redirect(sessions.sign_in_url(_return_path(request)))
    kind = {403: "forbidden", 404: "not_found"}.get(exc.status, "failed")
    status = exc.status if exc.status in (403, 404, 409) else 502
    return render(request, "error.html.j2", status, kind=kind, message=exc.message)


EXCEPTION_HANDLERS = {SignInRequired: error_page, CsrfRefused: error_page, ApiError: error_page}


# --- language ----------------------------------------------------------------------------------


@router.post("/language", response_model=None)
async def set_language(request: Request, form: FormDep) -> Response:
    lang = str(form.get("lang") or "en")
    response = redirect(sessions.safe_next(str(form.get("next") or "/")))
    if lang in ("en", "es"):
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, httponly=True,
                            samesite="lax", secure=sessions.is_tls(request))
    return response


# --- Today -----------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def today(request: Request, p: PrincipalDep, a: ApiDep) -> HTMLResponse:
    if p.role == Role.partner:
        return await partner_home(request, p, a)
    d = p.district
    follow = await a.get("/referrals/follow-ups", district_id=d)
    work = [r for school in follow["schools"] for r in school["referrals"]]
    # Most urgent first: escalated, then overdue, then due; crisis before routine within each.
    rank = {"escalated": 0, "overdue": 1, "due": 2}
    work.sort(key=lambda r: (rank.get(r["follow_up"], 3), URGENCY_ORDER.get(r["urgency"], 9),
                             r["follow_up_due_at"] or ""))
    no_partner = await a.get("/referrals", district_id=d, status="no_partner", limit=50)
    declined = await a.get("/referrals", district_id=d, status="declined", limit=50)
    recent = await a.get("/referrals", district_id=d, limit=20)
    return render(request, "today.html.j2", work=work, no_partner=no_partner,
                  declined=declined, recent=[r for r in recent if r["status"] not in CLOSED],
                  as_of=follow["as_of"])


async def partner_home(request: Request, p: Principal, a: Api) -> HTMLResponse:
    referrals = await a.get("/referrals", district_id=p.district, limit=200)
    open_ = [r for r in referrals if r["status"] not in CLOSED]
    return render(request, "partner_home.html.j2", referrals=open_,
                  done=[r for r in referrals if r["status"] in CLOSED])


# --- referrals -------------------------------------------------------------------------------

LIST_FILTERS = ("school_id", "status", "need", "urgency", "consent")
PAGE = 50


@router.get("/referrals", response_class=HTMLResponse)
async def referral_list(request: Request, c: ConsoleDep, p: PrincipalDep,
                        a: ApiDep, page: str = "1") -> HTMLResponse:
    filters = {k: request.query_params.get(k, "") for k in LIST_FILTERS}
    number = max(1, int(page)) if page.isdigit() else 1
    answer = await a.call("GET", "/referrals", params={
        "district_id": p.district, **filters, "limit": PAGE, "offset": (number - 1) * PAGE})
    total = int(answer.headers.get("x-total-count", "0"))
    query = urlencode({k: v for k, v in filters.items() if v})
    return render(request, "referrals.html.j2", referrals=answer.body, total=total, page=number,
                  pages=max(1, -(-total // PAGE)), filters=filters, query=query,
                  schools=my_schools(c, p), needs=list(Need), urgencies=list(Urgency),
                  consents=list(Consent),
                  statuses=["opened", "matched", "declined", "no_partner", "accepted",
                            "family_contacted", "in_service", "closed", "cancelled"])


def _referral_form(request: Request, c: Console, p: Principal, status: int = 200,
                   errors: dict[str, str] | None = None, message: str | None = None,
                   values: dict[str, str] | None = None,
                   families: list[dict[str, Any]] | None = None) -> HTMLResponse:
    return render(request, "referral_new.html.j2", status, errors=errors or {},
                  message=message, values=values or {}, schools=my_schools(c, p),
                  needs=list(Need), urgencies=list(Urgency), consents=list(Consent),
                  families=families or [])


@router.get("/referrals/new", response_class=HTMLResponse)
async def referral_new(request: Request, c: ConsoleDep, p: PrincipalDep,
                       a: ApiDep) -> HTMLResponse:
    staff_only(p)
    values = {k: request.query_params.get(k, "") for k in ("family_id", "school_id")}
    # Consent is asked for, never assumed: the form starts at pending, as the API does.
    values |= {"consent": "pending", "urgency": "routine", "once": new_once()}
    families = await a.get("/families", district_id=p.district,
                           school_id=values["school_id"] or None, limit=200)
    return _referral_form(request, c, p, values=values, families=families)


@router.post("/referrals", response_model=None)
async def referral_open(request: Request, c: ConsoleDep, p: PrincipalDep, a: ApiDep,
                        form: SignedFormDep) -> Response:
    staff_only(p)
    values = {k: str(form.get(k) or "").strip() for k in (
        "school_id", "family_id", "student_ref", "need", "urgency", "consent", "grade", "note",
        "once")}
    body: dict[str, Any] = {"district_id": p.district, "opened_by": _actor(p),
                            **{k: v for k, v in values.items() if v and k not in ("grade",
                                                                                  "once")}}
    if values["grade"]:
        body["grade"] = values["grade"]  # the API names a grade that is not a number
    try:
        answer = await a.post("/referrals", body, once=values["once"])
    except ApiError as exc:
        if exc.status not in (409, 422):
            raise
        families = await a.get("/families", district_id=p.district, limit=200)
        return _referral_form(request, c, p, 422 if exc.status == 422 else 409,
                              errors=exc.fields, message=exc.message, values=values,
                              families=families)
    referral = answer.body
    # The open duplicate is shown instead of a second referral, and the page says so.
    suffix = "?duplicate=1" if referral.get("duplicate_of_open") else "?opened=1"
    return redirect(f"/referrals/{quote(referral['id'])}{suffix}")


@router.get("/referrals/{referral_id}", response_class=HTMLResponse)
async def referral_page(request: Request, referral_id: str, p: PrincipalDep,
                        a: ApiDep) -> HTMLResponse:
    detail = await a.get(f"/referrals/{quote(referral_id)}", district_id=p.district)
    return await _referral_view(request, p, a, detail)


async def _referral_view(request: Request, p: Principal, a: Api, detail: dict[str, Any],
                         status: int = 200, errors: dict[str, str] | None = None,
                         message: str | None = None, form: str | None = None) -> HTMLResponse:
    family = messages = None
    if p.role in STAFF:
        family = await a.get(f"/families/{quote(detail['family_id'])}", district_id=p.district)
        messages = await a.get("/messages", district_id=p.district, referral_id=detail["id"])
    return render(request, "referral.html.j2", status, r=detail, family=family,
                  messages=messages or [], match=latest_match(detail["timeline"]),
                  timeline=timeline_rows(detail["timeline"]),
                  actions=actions_for(detail, p.role), outcomes=list(Outcome),
                  consents=list(Consent), cancel_reasons=CANCEL_REASONS,
                  decline_reasons=DECLINE_REASONS, errors=errors or {}, message=message,
                  failed_form=form, duplicate=request.query_params.get("duplicate") == "1",
                  opened=request.query_params.get("opened") == "1")


@router.get("/referrals/{referral_id}/audit", response_class=HTMLResponse)
async def referral_audit(request: Request, referral_id: str, p: PrincipalDep,
                         a: ApiDep) -> HTMLResponse:
    """Who read or changed the referral: the API answers district admins only."""
    path = f"/referrals/{quote(referral_id)}"
    trail = await a.get(f"{path}/audit", district_id=p.district)
    detail = await a.get(path, district_id=p.district)
    return render(request, "audit.html.j2", r=detail, trail=trail)


# What each action's form posts to the API, from the form's fields and the principal.
def _action_body(action: str, p: Principal, form: FormData) -> dict[str, Any]:
    text = {k: str(v).strip() for k, v in form.items() if isinstance(v, str)}
    match action:
        case "consent":
            return {"consent": text.get("consent", ""), "recorded_by": _actor(p)}
        case "notes":
            return {"text": text.get("text", ""), "author": _actor(p)}
        case "cancel":
            return {"reason": text.get("reason", ""), "cancelled_by": _actor(p)}
        case "close":
            return {"outcome": text.get("outcome", ""), "closed_by": _actor(p)}
        case "accept":
            return {"partner_id": p.partner_id or text.get("partner_id", "")}
        case "decline":
            return {"partner_id": p.partner_id or text.get("partner_id", ""),
                    "reason": text.get("reason", "")}
        case "in-service":
            return {"partner_id": p.partner_id} if p.partner_id else {"by": _actor(p)}
    raise ApiError(404, f"no action {action}")


@router.post("/referrals/{referral_id}/{action}", response_model=None)
async def referral_action(request: Request, referral_id: str, action: str, p: PrincipalDep,
                          a: ApiDep, form: SignedFormDep) -> Response:
    path = f"/referrals/{quote(referral_id)}"
    body = {"district_id": p.district, **_action_body(action, p, form)}
    try:
        await a.post(f"{path}/{action}", body)
    except ApiError as exc:
        if exc.status not in (409, 422):
            raise
        detail = await a.get(path, district_id=p.district)
        return await _referral_view(request, p, a, detail, exc.status, errors=exc.fields,
                                    message=exc.message, form=action)
    return redirect(f"/referrals/{quote(referral_id)}#{action}")


@router.get("/district", response_class=HTMLResponse)
async def district_page(request: Request, c: ConsoleDep, p: PrincipalDep) -> HTMLResponse:
    """A district admin's read-only view of the deployment's settings for the district: its
    schools, time zones, languages, follow-up windows and how people sign in."""
    if p.role != Role.district_admin:
        raise ApiError(403, "for district admins")
    district = c.districts.get(p.district)
    if district is None:
        raise ApiError(404, f"district {p.district} is not in the districts file")
    return render(request, "district.html.j2", district=district,
                  dev_sign_in=c.settings.dev_sign_in)


# --- families --------------------------------------------------------------------------------

FAMILY_FIELDS = ("school_id", "name", "preferred_language", "phone", "email",
                 "preferred_channel")


@router.get("/families/new", response_class=HTMLResponse)
async def family_new(request: Request, c: ConsoleDep, p: PrincipalDep) -> HTMLResponse:
    staff_only(p)
    return render(request, "family_new.html.j2", errors={},
                  values={"email_consent": "on", "once": new_once()},
                  schools=my_schools(c, p), message=None)


@router.post("/families", response_model=None)
async def family_register(request: Request, c: ConsoleDep, p: PrincipalDep, a: ApiDep,
                          form: SignedFormDep) -> Response:
    staff_only(p)
    values = {k: str(form.get(k) or "").strip() for k in (*FAMILY_FIELDS, "once")}
    body: dict[str, Any] = {"district_id": p.district,
                            **{k: v for k, v in values.items() if v and k != "once"},
                            "sms_consent": form.get("sms_consent") == "on",
                            "email_consent": form.get("email_consent") == "on"}
    try:
        family = (await a.post("/families", body, once=values["once"])).body
    except ApiError as exc:
        if exc.status not in (404, 409, 422):
            raise
        return render(request, "family_new.html.j2", exc.status, errors=exc.fields,
                      message=exc.message, schools=my_schools(c, p),
                      values=values | {k: str(form.get(k) or "")
                                       for k in ("sms_consent", "email_consent")})
    # Straight on to the referral: referrals waits for the family server-side.
    return redirect("/referrals/new?" + urlencode({"family_id": family["id"],
                                                   "school_id": family["school_id"]}))


# --- helpers ---------------------------------------------------------------------------------


def new_once() -> str:
    """The key of one form shown (runtime.idempotency): a resend of it creates nothing more."""
    return secrets.token_urlsafe(16)


def _actor(p: Principal) -> str:
    """Who did it, as the API wants it: an id, never a name."""
    cleaned = "".join(ch if ch.isalnum() or ch in "_.:-" else "-" for ch in p.subject)
    return cleaned[:128] or p.role.value


def staff_only(p: Principal) -> None:
    if p.role not in STAFF:
        raise ApiError(403, "this page is for coordinators and district admins")  # a 403 page



