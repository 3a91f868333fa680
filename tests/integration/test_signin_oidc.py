"""OpenID Connect sign-in over real HTTP against a real OpenID Provider (authlib's server side,
tests/support/oidc_provider.py): the code flow with PKCE, state and nonce; each person's claims
mapped to a role, schools or partner by the district file; a person with no role refused with a
page that says so; a tampered state refused before any code is exchanged; sign-out at the
provider too; every outcome in the district's sign-in audit trail."""

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from support.signin import SECRET_ENV, signin_system

from runtime.auth import Role
from runtime.settings import Settings
from services.console import session as sessions
from services.console.settings import ConsoleSettings

SECRET = "test-op-client-secret-0123456789"


@pytest.fixture
def backend() -> Iterator[dict[str, str]]:
    """SQLite only: sign-in does not touch the services' databases."""
    yield {}


async def _through_provider(http: httpx.AsyncClient, username: str,
                            next_path: str = "/") -> httpx.Response:
    """Click the provider's button, sign in at the provider, and answer the callback; the
    callback's answer is returned unfollowed. Returns the redirect to the callback if the
    caller wants it instead (see _to_callback)."""
    back = await _to_callback(http, username, next_path)
    return await http.get(back)


async def _to_callback(http: httpx.AsyncClient, username: str, next_path: str = "/") -> str:
    start = await http.get("/sign-in/d001/test-op", params={"next": next_path})
    assert start.status_code == 302, start.text
    authorize = start.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"][0]
    assert query["state"][0] and "code_verifier" not in query
    async with httpx.AsyncClient() as browser_at_op:
        form = await browser_at_op.get(authorize)
        assert form.status_code == 200 and "User name" in form.text
        signed = await browser_at_op.post(authorize, data={"username": username})
    assert signed.status_code == 302, signed.text
    return str(signed.headers["location"])


def _audit(settings: Settings) -> list[dict[str, str]]:
    folder = ConsoleSettings(**settings.model_dump()).sign_in_audit_dir
    path = folder / "d001.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _session(http: httpx.AsyncClient, settings: Settings) -> sessions.Session:
    secret = ConsoleSettings(**settings.model_dump()).console_session_secret
    return sessions.decode(secret, http.cookies.get(sessions.COOKIE))


async def test_claims_map_to_roles_schools_and_partner(settings: Settings, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    async with signin_system(settings, tmp_path, SECRET) as site:
        expected = {"ada": (Role.district_admin, set(), None),
                    "cora": (Role.coordinator, {"lincoln-es"}, None),
                    "pat": (Role.partner, set(), "p-smile")}
        for username, (role, schools, partner) in expected.items():
            async with httpx.AsyncClient(base_url=site.url, timeout=15) as http:
                page = await http.get("/sign-in")
                assert page.status_code == 200
                assert 'href="/sign-in/d001/test-op?next=/"' in page.text
                done = await _through_provider(http, username, "/referrals")
                assert done.status_code == 303 and done.headers["location"] == "/referrals"
                who = _session(http, site.settings).principal
                assert who is not None
                assert (who.role, set(who.schools), who.partner_id) == (role, schools, partner)
                assert who.subject == f"{username}@" + (
                    "smilebright.example" if username == "pat" else "riverside.example")
                # The services take the console's ES256 token for this person.
                listed = await http.get("/referrals" if role != Role.partner else "/")
                assert listed.status_code == 200, listed.text
        trail = _audit(site.settings)
        assert [(e["kind"], e["subject"], e["role"]) for e in trail] == [
            ("sign_in", "ada@riverside.example", "district_admin"),
            ("sign_in", "cora@riverside.example", "coordinator"),
            ("sign_in", "pat@smilebright.example", "partner")]
        # The district admin reads the trail on the console; a coordinator may not.
        async with httpx.AsyncClient(base_url=site.url, timeout=15) as http:
            await _through_provider(http, "ada")
            page = await http.get("/district/sign-ins")
            assert page.status_code == 200 and "cora@riverside.example" in page.text


async def test_a_person_with_no_role_is_refused_and_told_so(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    async with signin_system(settings, tmp_path, SECRET) as site, \
            httpx.AsyncClient(base_url=site.url, timeout=15) as http:
        refused = await _through_provider(http, "nobody")
        assert refused.status_code == 403
        assert "Your account has no role in Ensemble" in refused.text
        assert "Riverside Unified" in refused.text
        assert _session(http, site.settings).principal is None
        assert (await http.get("/referrals")).status_code == 303  # still signed out
        [entry] = _audit(site.settings)
        assert (entry["kind"], entry["reason"], entry["subject"]) == (
            "refused", "no_role", "nobody@riverside.example")


async def test_a_tampered_or_missing_state_is_refused_before_the_code_is_used(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    async with signin_system(settings, tmp_path, SECRET) as site, \
            httpx.AsyncClient(base_url=site.url, timeout=15) as http:
        back = await _to_callback(http, "ada")
        tampered = re.sub(r"state=[^&]+", "state=forged-by-someone-else", back)
        answer = await http.get(tampered)
        assert answer.status_code == 400
        assert "could not be finished" in answer.text
        assert _session(http, site.settings).principal is None
        assert site.provider.token_requests == 0  # the code was never exchanged
        # The flow is spent: the genuine answer after it finds no flow to finish either.
        again = await http.get(back)
        assert again.status_code == 400 and site.provider.token_requests == 0
        # Another browser (no flow cookie) cannot finish this person's sign-in.
        async with httpx.AsyncClient(base_url=site.url, timeout=15) as stranger:
            assert (await stranger.get(back)).status_code == 400
        reasons = [e["reason"] for e in _audit(site.settings)]
        assert reasons[0] == "state_mismatch"


async def test_sign_out_ends_the_session_here_and_at_the_provider(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    async with signin_system(settings, tmp_path, SECRET) as site, \
            httpx.AsyncClient(base_url=site.url, timeout=15) as http:
        await _through_provider(http, "cora")
        csrf = _session(http, site.settings).csrf
        out = await http.post("/sign-out", data={"csrf": csrf})
        # A page that goes on to the provider (a form's answer may not redirect off-site).
        assert out.status_code == 200 and "Signed out" in out.text
        found = re.search(r'id="provider-sign-out" href="([^"]+)"', out.text)
        assert found is not None
        logout = html.unescape(found.group(1))
        assert f'http-equiv="refresh" content="0; url={found.group(1)}"' in out.text
        assert logout.startswith(f"{site.provider.issuer}/logout?")
        assert "id_token_hint=" in logout
        assert _session(http, site.settings).principal is None
        async with httpx.AsyncClient() as browser_at_op:
            ended = await browser_at_op.get(logout)
        assert ended.status_code == 302 and ended.headers["location"] == f"{site.url}/sign-in"
        assert site.provider.ended == ["op-cora"]
        assert [e["kind"] for e in _audit(site.settings)] == ["sign_in", "sign_out"]


async def test_a_refusal_at_the_provider_is_a_page_and_an_audit_entry(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    async with signin_system(settings, tmp_path, SECRET) as site, \
            httpx.AsyncClient(base_url=site.url, timeout=15) as http:
        back = await _to_callback(http, "ada")
        denied = re.sub(r"code=[^&]+", "error=access_denied<script>", back)
        answer = await http.get(denied)
        assert answer.status_code == 502 and "could not be finished" in answer.text
        assert _session(http, site.settings).principal is None
        assert site.provider.token_requests == 0
        [entry] = _audit(site.settings)
        assert (entry["kind"], entry["reason"]) == ("refused", "provider_access_deniedscript")
