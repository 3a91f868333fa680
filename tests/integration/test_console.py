"""The console without a browser: development sign-in only in development mode, the console
alone with its health and metrics, the session cookie, the language choice, and the API's
field errors mapped to form fields."""

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import _QuietServer
from starlette.requests import Request

from ensemble.embedded import free_port
from ensemble.system import build_console, console_settings, dev_mode
from runtime.auth import Principal, Role
from runtime.host import create_app
from runtime.settings import Settings
from services.console import session as sessions
from services.console.api_client import ApiError
from services.console.i18n import choose_language, load_translators
from services.console.views import actions_for, latest_match

SECRET = "a-test-secret-for-the-console-session-0123456789"


@contextlib.asynccontextmanager
async def _alone(settings: Settings, dev: bool) -> AsyncIterator[str]:
    """The console as its own process runs it: no services, its pages over the APIs."""
    app = create_app([], title="Ensemble console",
                     web=build_console(console_settings(settings, dev_sign_in=dev)))
    port = free_port()
    server = _QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                         lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_sign_in_is_refused_outside_development_mode(tmp_path: Any) -> None:
    async with _alone(Settings(data_dir=tmp_path), dev=False) as url, \
            httpx.AsyncClient(base_url=url) as http:
        page = await http.get("/sign-in")
        assert page.status_code == 403 and "turned off" in page.text
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None
        refused = await http.post("/sign-in", data={
            "csrf": found.group(1), "role": "district_admin", "district": "d001"})
        assert refused.status_code == 403
        cookie = http.cookies.get(sessions.COOKIE)
        secret = console_settings(Settings()).console_session_secret
        assert sessions.decode(secret, cookie).principal is None  # nobody signed in
        # Alone, the console has its own health and metrics, like every service.
        assert (await http.get("/health/live")).status_code == 200
        ready = await http.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert (await http.get("/metrics")).status_code == 200
        # Pages need a session: back to sign-in, then to the page.
        today = await http.get("/referrals?need=dental")
        assert today.status_code == 303
        assert today.headers["location"] == "/sign-in?next=/referrals%3Fneed%3Ddental"


async def test_development_sign_in_signs_in_and_out(tmp_path: Any) -> None:
    async with _alone(Settings(data_dir=tmp_path), dev=True) as url, \
            httpx.AsyncClient(base_url=url) as http:
        page = await http.get("/sign-in?next=/referrals")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        missing = await http.post("/sign-in", data={
            "csrf": csrf.group(1), "role": "coordinator", "district": "d001"})
        assert missing.status_code == 422
        assert 'id="schools-error"' in missing.text  # the error beside its field
        signed = await http.post("/sign-in", data={
            "csrf": csrf.group(1), "role": "coordinator", "district": "d001",
            "schools": "lincoln-es", "next": "https://evil.example/"})
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        header = signed.headers["set-cookie"].lower()
        assert "httponly" in header and "samesite=lax" in header
        assert "secure" not in header  # plain HTTP here; behind TLS it is Secure
        # No API runs here: the page says so, never a stack trace.
        today = await http.get("/")
        assert today.status_code == 502 and "did not answer" in today.text
        assert "Traceback" not in today.text
        assert today.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in today.headers["content-security-policy"]
        secret = console_settings(Settings()).console_session_secret
        session = sessions.decode(secret, http.cookies.get(sessions.COOKIE))
        assert session.principal is not None
        assert session.principal.schools == {"lincoln-es"}
        assert session.csrf != csrf.group(1)  # a new token at sign-in
        # Behind a TLS proxy (here trusted: loopback) the cookie is Secure.
        async with httpx.AsyncClient(base_url=url) as fresh:
            proxied = await fresh.get("/sign-in", headers={"X-Forwarded-Proto": "https"})
        assert "secure" in proxied.headers["set-cookie"].lower()
        old = await http.post("/sign-out", data={"csrf": csrf.group(1)})
        assert old.status_code == 403  # the pre-sign-in token is worth nothing now
        out = await http.post("/sign-out", data={"csrf": session.csrf})
        assert out.status_code == 303
        assert sessions.decode(secret, http.cookies.get(sessions.COOKIE)).principal is None


def test_session_cookie_is_signed_and_expires() -> None:
    who = Principal("c1", Role.coordinator, "d001", frozenset({"lincoln-es"}))
    session = sessions.signed_in(who, hours=1)
    value = sessions.encode(SECRET, session)
    assert sessions.decode(SECRET, value).principal == who
    assert sessions.decode("another-secret-of-the-same-length-0123456789", value).principal \
        is None
    tampered = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    assert sessions.decode(SECRET, tampered).principal is None
    ended = sessions.encode(SECRET, sessions.Session(
        csrf="x", principal=who, expires=datetime.now(UTC) - timedelta(1)))
    gone = sessions.decode(SECRET, ended)
    assert gone.principal is None and gone.expired
    assert sessions.csrf_ok(session, session.csrf)
    assert not sessions.csrf_ok(session, None) and not sessions.csrf_ok(session, "nope")


@pytest.mark.parametrize(("given", "safe"), [
    ("/referrals?x=1", "/referrals?x=1"), ("//evil.example/", "/"), ("https://e.x/", "/"),
    ("/\\evil", "/"), (None, "/"), ("referrals", "/")])
def test_return_paths_stay_on_the_site(given: str | None, safe: str) -> None:
    assert sessions.safe_next(given) == safe


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw})


def test_language_from_the_switch_or_the_browser() -> None:
    assert choose_language(_request({"accept-language": "es-MX,es;q=0.9,en;q=0.5"})) == "es"
    assert choose_language(_request({"accept-language": "fr, en;q=0.4"})) == "en"
    assert choose_language(_request({"accept-language": "es",
                                     "cookie": "ensemble_lang=en"})) == "en"
    spanish = load_translators()["es"]
    assert spanish.gettext("Today") == "Hoy"
    assert spanish.gettext("family_contacted") == "familia contactada"
    assert load_translators()["en"].gettext("family_contacted") == "family contacted"
    assert spanish.when("2026-12-03T17:30:00+00:00", "America/Los_Angeles").startswith("3 dic")


def test_api_field_errors_map_to_form_fields() -> None:
    error = ApiError(422, [{"loc": ["body", "phone"], "msg": "not a phone number", "type": "v"},
                           {"loc": ["body", "students", 0, "grade"], "msg": "too big",
                            "type": "v"}])
    assert error.fields == {"phone": "not a phone number", "students": "too big"}
    assert ApiError(409, "a referral that is closed cannot be closed").message.startswith("a ")


def test_actions_follow_the_referrals_state() -> None:
    assert actions_for({"status": "matched"}, Role.coordinator) == {
        "consent", "notes", "cancel", "close"}
    assert actions_for({"status": "closed"}, Role.coordinator) == {"notes"}
    assert actions_for({"status": "matched", "accepted_at": None}, Role.partner) == {
        "accept", "decline"}
    assert actions_for({"status": "accepted", "accepted_at": "t"}, Role.partner) == {
        "in-service"}
    assert actions_for({"status": "in_service", "accepted_at": "t"}, Role.partner) == set()
    timeline = [{"event": "PartnerMatched", "at": "t", "data": {"partner_name": "A",
                                                                "score": 0.8,
                                                                "reasons": ["need dental"]}},
                {"event": "ReferralDeclined", "at": "t2", "data": {}}]
    assert latest_match(timeline) is None
    assert latest_match(timeline[:1])["reasons"] == ["need dental"]  # type: ignore[index]


def test_development_mode_is_the_embedded_default_only() -> None:
    assert dev_mode({}) is True
    assert dev_mode({"NATS_URL": "nats://nats:4222"}) is False
    assert dev_mode({"NATS_URL": "nats://x", "ENSEMBLE_DEV_SIGN_IN": "true"}) is True
    assert dev_mode({"ENSEMBLE_DEV_SIGN_IN": "false"}) is False


def test_every_word_of_the_console_has_its_spanish() -> None:
    """Each `_("...")` in the templates and pages is in the Spanish catalog."""
    folder = Path(__file__).parents[2] / "services" / "console"
    pattern = re.compile(r"""\b_\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""")
    words = {m.group(1) or m.group(2)
             for path in [*folder.glob("templates/*.j2"), *folder.glob("*.py")]
             for m in pattern.finditer(path.read_text())}
    assert len(words) > 100
    spanish = load_translators()["es"]
    missing = sorted(w for w in words if spanish.gettext(w) == w and w not in ("no",))
    assert not missing, missing
