"""The page a partner's contact reaches from the e-mail about a matched referral: /p/<token>.
No sign-in: the signed link is the credential, checked by the partners service (which made it).
It shows that one referral in the partner's view and lets them do one thing, once: accept,
decline with a reason, or mark it in service. Every use and every refusal goes into the
district's sign-in audit trail."""

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from runtime.auth import Principal, Role
from services.console.api_client import Api, ApiError
from services.console.pages import DECLINE_REASONS, Console, ConsoleDep, FormDep, render
from services.console.views import actions_for

router = APIRouter()
# The console's action names and what the partners service calls each answer.
ANSWERS = {"accept": "accept", "decline": "decline", "in-service": "in_service"}


def _public(c: Console) -> Api:
    """The partners service's link routes need no bearer token: the link is the credential."""
    return Api(c.http, "none", c.settings.base_url_of)


def _as_partner(c: Console, link: dict[str, Any]) -> Api:
    """An API client acting for the link's partner in its district (a short-lived token the
    console signs, as for anyone signed in), used for that one referral only."""
    who = Principal(subject=f"partner-link-{link['link_id'][:12]}", role=Role.partner,
                    district=link["district_id"], partner_id=link["partner_id"])
    return Api(c.http, c.api_tokens().token_for(who), c.settings.base_url_of)


async def _link(c: Console, token: str) -> dict[str, Any] | None:
    try:
        return dict(await _public(c).get(f"/partner-links/{quote(token)}"))
    except ApiError as exc:
        if exc.status in (404, 422):
            return None
        raise


def _refused(request: Request, c: Console, link: dict[str, Any] | None,
             reason: str) -> HTMLResponse:
    if link is not None and c.audit is not None:
        c.audit.record(link["district_id"], "link_refused", subject=link["partner_id"],
                       reason=reason, referral_id=link["referral_id"])
    return render(request, "partner_link.html.j2", 410, refused=reason, r=None, done=None,
                  actions=())


@router.get("/p/{token}", response_class=HTMLResponse)
async def partner_link_page(request: Request, token: str, c: ConsoleDep) -> HTMLResponse:
    link = await _link(c, token)
    if link is None or link["status"] != "open":
        return _refused(request, c, link, link["status"] if link else "invalid")
    detail = await _as_partner(c, link).get(f"/referrals/{quote(link['referral_id'])}",
                                            district_id=link["district_id"])
    return render(request, "partner_link.html.j2", refused=None, r=detail, token=token,
                  done=None, actions=actions_for(detail, Role.partner),
                  decline_reasons=DECLINE_REASONS)


@router.post("/p/{token}", response_model=None)
async def partner_link_answer(request: Request, token: str, c: ConsoleDep,
                              form: FormDep) -> Response:
    action = str(form.get("action") or "")
    reason = str(form.get("reason") or "")
    link = await _link(c, token)
    if link is None or link["status"] != "open":
        return _refused(request, c, link, link["status"] if link else "invalid")
    if action not in ANSWERS or (action == "decline" and reason not in DECLINE_REASONS):
        return render(request, "error.html.j2", 422, kind="failed",
                      message="action: accept, decline (with a reason) or in-service")
    try:  # spent first: a second tab or a replay is refused, even while this one runs
        await _public(c).post(f"/partner-links/{quote(token)}/use",
                              {"action": ANSWERS[action]})
    except ApiError as exc:
        if exc.status not in (404, 410):
            raise
        return _refused(request, c, link, str(exc.detail))
    body: dict[str, Any] = {"district_id": link["district_id"],
                            "partner_id": link["partner_id"]}
    if action == "decline":
        body["reason"] = reason
    path = f"/referrals/{quote(link['referral_id'])}/{action}"
    await _as_partner(c, link).post(path, body)
    if c.audit is not None:
        c.audit.record(link["district_id"], "link_used", subject=link["partner_id"],
                       reason=ANSWERS[action], referral_id=link["referral_id"])
    return render(request, "partner_link.html.j2", refused=None, r=None, done=action,
                  actions=())
