"""District sign-in in a real Chromium (Debian's, driven by Playwright) against a real OpenID
Provider built on authlib's server side (tests/support/oidc_provider.py) and the whole system
run as a deployment runs it: no development sign-in, API tokens signed with the console's own
key and checked by the services against its JWKS. Sign-in and role mapping, refusal of a person
with no role, a tampered state, sign-out at the provider, and the console's key rotated while
a person is signed in; a partner's link followed once, replayed, and expired; axe-core on the
pages a person sees."""

import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from conftest import Inbox
from support.signin import SECRET_ENV, SignInSystem, signin_system
from support.waiting import eventually
from typer.testing import CliRunner

from ensemble.cli import app as cli
from runtime.auth import issue_token
from runtime.keys import SigningKeys
from runtime.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (/usr/bin/chromium): .ci/run installs it")

playwright_api = pytest.importorskip("playwright.async_api")
axe_api = pytest.importorskip("axe_playwright_python.async_playwright")

SECRET = "browser-test-op-client-secret-0123456789"


@pytest.fixture
def backend() -> Iterator[dict[str, str]]:
    yield {}


class Browser:
    def __init__(self, site: SignInSystem, browser: Any) -> None:
        self.site = site
        self.browser = browser
        self.axe = axe_api.Axe()

    async def page(self) -> Any:
        context = await self.browser.new_context(base_url=self.site.url)
        return await context.new_page()

    async def sign_in(self, username: str, start: str = "/", page: Any = None) -> Any:
        """Open a page, be sent to sign in, pick the district's button, sign in at the
        provider's own page, and come back."""
        page = page or await self.page()
        await page.goto(start)
        await page.wait_for_url(re.compile(r"/sign-in\?next="))
        await page.get_by_role("link", name="Sign in with Riverside account").click()
        await page.wait_for_url(f"{self.site.provider.issuer}/authorize**")
        await page.get_by_label("User name").fill(username)
        await page.get_by_role("button", name="Continue").click()
        await page.wait_for_load_state()
        return page

    async def accessible(self, page: Any) -> None:
        results = await self.axe.run(page)
        bad = [(v["id"], v["impact"]) for v in results.response["violations"]
               if v["impact"] in ("serious", "critical")]
        assert not bad, (page.url, bad)


@pytest.fixture
async def chromium(settings: Settings, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Browser]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    async with signin_system(settings, tmp_path, SECRET) as site, \
            playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield Browser(site, browser)
        finally:
            await browser.close()


async def _me(page: Any) -> str:
    return str(await page.locator(".me").inner_text())


async def test_staff_sign_in_with_the_district_account_and_get_their_role(
        chromium: Browser) -> None:
    cora = await chromium.sign_in("cora", start="/referrals?need=dental")
    assert re.search(r"/referrals\?need=dental$", cora.url)  # back where she was going
    assert "cora@riverside.example" in await _me(cora) and "coordinator" in await _me(cora)
    await chromium.accessible(cora)
    # Her schools only: the filter offers Lincoln, not Roosevelt.
    options = await cora.locator("select[name=school_id] option").all_inner_texts()
    assert "Lincoln Elementary" in options and "Roosevelt Middle School" not in options

    ada = await chromium.sign_in("ada")
    assert "district admin" in await _me(ada)
    await ada.goto("/district")
    assert "ensemble-admins" in await ada.locator("main").inner_text()
    await ada.get_by_role("link", name="Sign-ins and refusals").click()
    trail = await ada.locator("main").inner_text()
    assert "cora@riverside.example" in trail and "ada@riverside.example" in trail
    await chromium.accessible(ada)

    pat = await chromium.sign_in("pat")
    assert "partner" in await _me(pat)
    assert "Our referrals" in await pat.locator("h1").inner_text()


async def test_a_person_with_no_role_sees_a_page_that_says_so(chromium: Browser) -> None:
    page = await chromium.sign_in("nobody")
    main = await page.locator("main").inner_text()
    assert "Your account has no role in Ensemble" in main
    assert "Riverside Unified" in main
    await chromium.accessible(page)
    await page.goto("/")
    await page.wait_for_url(re.compile(r"/sign-in\?next=/$"))  # still not signed in


async def test_a_tampered_state_is_refused(chromium: Browser) -> None:
    """The provider's answer is altered on its way back to the console: the redirect it sends
    the browser carries another state than the one this browser's sign-in started with."""
    page = await chromium.page()
    authorize = re.compile(r"/authorize\?")

    async def tamper(route: Any) -> None:
        if route.request.method != "POST":
            await route.continue_()
            return
        answer = await route.fetch(max_redirects=0)
        headers = dict(answer.headers)
        headers["location"] = re.sub(r"state=[^&]+", "state=altered-on-the-way",
                                     headers["location"])
        await route.fulfill(response=answer, headers=headers)

    await page.route(authorize, tamper)
    await chromium.sign_in("ada", page=page)
    main = await page.locator("main").inner_text()
    assert "This sign-in could not be finished" in main
    assert chromium.site.provider.token_requests == 0
    await chromium.accessible(page)
    await page.unroute(authorize)
    # Starting again works.
    await chromium.sign_in("ada", page=page)
    assert "district admin" in await _me(page)


async def test_the_consoles_key_rotates_while_a_person_is_signed_in(chromium: Browser) -> None:
    site = chromium.site
    page = await chromium.sign_in("cora", start="/referrals")
    keys = SigningKeys(site.keys_file)
    old = keys.active_kid
    runner = CliRunner()
    # Step 1 and 2: a new key, published and signing; the old one still published.
    done = runner.invoke(cli, ["keys", "new", str(site.keys_file), "--activate"])
    assert done.exit_code == 0, done.output
    new = keys.active_kid
    async with httpx.AsyncClient(base_url=site.url) as http:
        published = (await http.get("/.well-known/jwks.json")).json()
    assert [k["kid"] for k in published["keys"]] == [new, old]
    await page.reload()
    assert "Referrals" in await page.locator("h1").inner_text()  # served, not sent to sign in
    # Step 3: the old key retired; she is still signed in and served.
    assert runner.invoke(cli, ["keys", "retire", str(site.keys_file), old]).exit_code == 0
    await page.get_by_role("link", name="Today").first.click()
    await page.wait_for_load_state()
    assert "/sign-in" not in page.url
    assert "cora@riverside.example" in await _me(page)


async def test_sign_out_ends_the_session_here_and_at_the_provider(chromium: Browser) -> None:
    page = await chromium.sign_in("cora")
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(re.compile(r"/sign-in$"))
    assert chromium.site.provider.ended == ["op-cora"]
    await page.goto("/referrals")
    await page.wait_for_url(re.compile(r"/sign-in\?next="))


async def _api(site: SignInSystem) -> httpx.AsyncClient:
    """d001's district admin over the API, with a token the console's key signed (the
    services accept no other here)."""
    bearer = issue_token(SigningKeys(site.keys_file), subject="test-admin",
                         role="district_admin", district="d001")
    return httpx.AsyncClient(base_url=f"{site.url}/api/v1", timeout=15,
                             headers={"Authorization": f"Bearer {bearer}"})


async def _partner_link(site: SignInSystem, inbox: Inbox) -> str:
    """A referral matched to a partner with a contact: the link in the e-mail it gets."""
    async with await _api(site) as api:
        partner = await api.post("/partners", json={
            "district_id": "d001", "name": "Sonrisa Dental", "needs": ["dental"],
            "schools": ["lincoln-es"], "languages": ["en"], "capacity": 2,
            "email": "intake@sonrisa.example"})
        assert partner.status_code == 201, partner.text
        family = await api.post("/families", json={
            "district_id": "d001", "school_id": "lincoln-es", "name": "Familia Rivera",
            "preferred_language": "es", "email": "rivera@example.org",
            "preferred_channel": "email"})
        assert family.status_code == 201, family.text
        referral = await api.post("/referrals", json={
            "district_id": "d001", "school_id": "lincoln-es", "student_ref": "stu-9",
            "family_id": family.json()["id"], "need": "dental", "urgency": "urgent",
            "consent": "given"})
        assert referral.status_code in (200, 201), referral.text
    mail = await eventually(lambda: (inbox.to("intake@sonrisa.example") or [None])[-1],
                            "the partner's e-mail", 30)
    part = mail.get_payload(0) if mail.is_multipart() else mail
    found = re.search(r"(http://\S+/p/\S+)", part.get_payload(decode=True).decode())
    assert found is not None
    return found.group(1)


async def test_a_partner_follows_the_link_once_and_it_then_says_it_no_longer_works(
        chromium: Browser, smtp: tuple[Inbox, str]) -> None:
    link = await _partner_link(chromium.site, smtp[0])
    page = await chromium.page()
    await page.goto(link)
    assert "A referral for your organization" in await page.locator("h1").inner_text()
    await chromium.accessible(page)
    # The same link open in a second tab, its form ready to send.
    second = await page.context.new_page()
    await second.goto(link)
    await page.get_by_role("button", name="Accept the referral").click()
    await page.wait_for_load_state()
    assert "Thank you" in await page.locator("h1").inner_text()
    # Replayed from the second tab: refused, nothing done.
    await second.get_by_label("Reason for declining").select_option("no_capacity")
    await second.get_by_role("button", name="Decline").click()
    await second.wait_for_load_state()
    assert "This link no longer works" in await second.locator("h1").inner_text()
    await page.goto(link)
    assert "This link no longer works" in await page.locator("h1").inner_text()
    assert "already been used" in await page.locator("main").inner_text()
    await chromium.accessible(page)


async def test_an_expired_partner_link_says_so(chromium: Browser, smtp: tuple[Inbox, str]
                                               ) -> None:
    link = await _partner_link(chromium.site, smtp[0])
    base, token = link.rsplit("/p/", 1)
    claims = jwt.decode(token, options={"verify_signature": False})
    expired = jwt.encode({**claims, "exp": int(time.time()) - 60},
                         chromium.site.settings.partner_link_secret, algorithm="HS256")
    page = await chromium.page()
    await page.goto(f"{base}/p/{expired}")
    assert "This link no longer works" in await page.locator("h1").inner_text()
    assert "It has expired." in await page.locator("main").inner_text()
    await page.goto(link)  # the genuine one still opens
    assert "A referral for your organization" in await page.locator("h1").inner_text()
