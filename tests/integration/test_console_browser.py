"""The console in a real Chromium (Debian's `chromium`, driven by Playwright) against the whole
system over real HTTP, NATS, SQLite, SMTP and the development SMS provider: the coordinator's
loop by clicking, isolation between schools and partners, CSRF, an ended session, and axe-core
on every page with no serious or critical violation."""

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import Inbox, _QuietServer, token

from ensemble.embedded import DevSmsServer
from ensemble.system import build_console, build_services, console_settings
from runtime.host import create_app
from runtime.settings import Settings
from services.console import session as sessions
from services.notifications.twilio import SIGNATURE_HEADER, compute_signature

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (/usr/bin/chromium): .ci/run installs it")

playwright_api = pytest.importorskip("playwright.async_api")
axe_api = pytest.importorskip("axe_playwright_python.async_playwright")


@pytest.fixture
def backend() -> Iterator[dict[str, str]]:
    """SQLite only: the pages are the same on either database; the APIs' tests cover both."""
    yield {}


@dataclass
class Site:
    url: str
    settings: Settings
    admin: httpx.AsyncClient  # d001's district admin over the API, to set the scene
    sms_store: Path
    browser: Any
    axe: Any
    checked: set[str]

    async def page(self) -> Any:
        context = await self.browser.new_context(base_url=self.url)
        return await context.new_page()

    async def sign_in(self, role: str, district: str = "d001", schools: tuple[str, ...] = (),
                      partner_id: str | None = None, page: Any = None) -> Any:
        page = page or await self.page()
        if "/sign-in" not in page.url:
            await page.goto("/sign-in")
        await page.get_by_label("Role").select_option(role)
        await page.get_by_label("District").select_option(district)
        for school in schools:
            await page.locator(f"#school-{district}-{school}").check()
        if partner_id:
            await page.get_by_label("Partner id (a partner's staff)").fill(partner_id)
        await page.get_by_label("Your user id").fill(f"{role}-1")
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_load_state()
        return page

    async def accessible(self, page: Any) -> None:
        """axe-core on the page as it is: no serious or critical violation."""
        results = await self.axe.run(page)
        bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
               for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
        assert not bad, (page.url, bad)
        self.checked.add(re.sub(r"/[0-9a-f-]{36}", "/{id}", page.url.split("?")[0]
                                .removeprefix(self.url)) or "/")


@contextlib.asynccontextmanager
async def _serve(app: Any, port: int) -> AsyncIterator[None]:
    server = _QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                         access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped during start-up")
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def site(settings: Settings, smtp: tuple[Inbox, str]) -> AsyncIterator[Site]:
    services = build_services(settings)
    for service in services:
        await service.runtime.migrate()  # as `ensemble migrate` does before a deployment starts
    app = create_app(services,
                     web=build_console(console_settings(settings, dev_sign_in=True)))
    port = int(settings.public_base_url.rsplit(":", 1)[1])
    sms_store = settings.data_dir / "sms" / "messages.jsonl"
    sms_port = int(str(settings.sms_api_url).rsplit(":", 1)[1])
    admin = {"Authorization": f"Bearer {token(settings, 'district_admin', 'd001')}"}
    async with DevSmsServer(sms_store, sms_port, settings.sms_auth_token,
                            f"{settings.public_base_url}/api/v1/sms/inbound"), \
            _serve(app, port), \
            httpx.AsyncClient(base_url=settings.public_base_url, headers=admin,
                              timeout=10) as http, \
            playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield Site(settings.public_base_url, settings, http, sms_store, browser,
                       axe_api.Axe(), set())
        finally:
            await browser.close()


async def _partner(site: Site, name: str, schools: list[str], district: str = "d001",
                   needs: tuple[str, ...] = ("dental",)) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token(site.settings, 'district_admin', district)}"}
    answer = await site.admin.post("/api/v1/partners", headers=headers, json={
        "district_id": district, "name": name, "needs": list(needs), "schools": schools,
        "languages": ["en", "es"], "capacity": 3})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def _text_back(site: Site, phone: str, text: str) -> None:
    """The family answers the text: the provider posts Twilio's signed inbound webhook."""
    for _ in range(300):
        if site.sms_store.exists() and phone in site.sms_store.read_text():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("no text reached the family")
    url = f"{site.url}/api/v1/sms/inbound"
    form = {"MessageSid": "SM" + uuid.uuid4().hex, "From": phone, "To": "+15005550006",
            "Body": text}
    answer = await site.admin.post(url, data=form, headers={
        SIGNATURE_HEADER: compute_signature(site.settings.sms_auth_token, url, form)})
    assert answer.status_code == 200, answer.text


async def _until_text(page: Any, text: str, tries: int = 60) -> None:
    """Reload the page until it shows ``text`` (the loop runs through events meanwhile)."""
    for _ in range(tries):
        if text in await page.locator("main").inner_text():
            return
        await asyncio.sleep(0.25)
        await page.reload()
    raise AssertionError(f"{page.url} never showed {text!r}")


async def _register_and_open(site: Site, page: Any, name: str, phone: str,
                             student: str) -> str:
    """As a coordinator does it: register the family, then at once open its referral."""
    await page.get_by_role("link", name="Register a family").first.click()
    await site.accessible(page)
    await page.get_by_label("Family name").fill(name)
    await page.get_by_label("Preferred language").select_option("es")
    await page.get_by_label("Mobile phone").fill(phone)
    await page.get_by_label("Reach them by").select_option("sms")
    await page.get_by_label("text messages").check()
    await page.get_by_role("button", name="Register and open a referral").click()
    await page.wait_for_url(re.compile(r"/referrals/new\?"))
    await site.accessible(page)
    # The family just registered is already chosen.
    assert name in await page.locator("#f-family_id option:checked").inner_text()
    await page.get_by_label("Student reference (the district's id, not a name)").fill(student)
    await page.get_by_label("Need", exact=True).select_option("dental")
    # A family may share with the school's own supports only.
    assert "shared inside the school only" in await page.locator(
        "#f-consent option").all_inner_texts()
    await page.get_by_label("Family's consent to share with a partner").select_option("given")
    await page.get_by_role("button", name="Open the referral").click()
    await page.wait_for_url(re.compile(r"/referrals/[0-9a-f-]{36}"))
    assert "Referral opened." in await page.locator("main").inner_text()
    return str(page.url.split("/referrals/")[1].split("?")[0])


async def test_the_whole_loop_by_clicking(site: Site) -> None:
    partner = await _partner(site, "Smile Bright Dental", ["lincoln-es"])
    coordinator = await site.sign_in("coordinator", schools=("lincoln-es",))
    assert "Today" in await coordinator.locator("h1").inner_text()
    await site.accessible(coordinator)

    phone = "+14155550123"
    referral_id = await _register_and_open(site, coordinator, "Familia Rivera", phone, "stu-77")
    await _until_text(coordinator, "Smile Bright Dental")  # matched, with the reasons why
    why = await coordinator.locator("ul.reasons").inner_text()
    assert "Why this partner" in await coordinator.locator("main").inner_text()
    # In words, with the school's name: not partners' codes ("school lincoln-es served").
    assert "offers dental" in why and "serves Lincoln Elementary" in why, why
    await site.accessible(coordinator)

    # The partner's staff see the referral in their own view and accept it.
    staff = await site.sign_in("partner", partner_id=partner["id"])
    assert "Our referrals" in await staff.locator("h1").inner_text()
    await site.accessible(staff)
    await staff.locator(f"a[href='/referrals/{referral_id}']").click()
    await site.accessible(staff)
    main = await staff.locator("main").inner_text()
    assert "Familia Rivera" not in main and phone not in main  # contact details stay home
    await staff.get_by_role("button", name="Accept the referral").click()
    await _until_text(staff, "Mark in service")

    # The family answers the text; the coordinator sees it contacted and closes it.
    await _text_back(site, phone, "Sí, gracias")
    await coordinator.goto(f"/referrals/{referral_id}")
    await _until_text(coordinator, "family contacted")
    text = await coordinator.locator("#outreach").locator("..").inner_text()
    assert "text message" in text and "es" in text  # the attempt: channel and language
    await coordinator.get_by_label("Outcome").select_option("services_received")
    await coordinator.get_by_role("button", name="Close with this outcome").click()
    await coordinator.wait_for_load_state()
    facts = await coordinator.locator(".facts").inner_text()
    assert "closed" in facts and "services received" in facts
    await site.accessible(coordinator)

    closed = await site.admin.get(f"/api/v1/referrals/{referral_id}",
                                  params={"district_id": "d001"})
    assert closed.json()["outcome"] == "services_received"
    assert [e["event"] for e in closed.json()["timeline"]][-1] == "ReferralClosed"

    # Today and the list, axe-checked too.
    await coordinator.goto("/")
    await site.accessible(coordinator)
    await coordinator.get_by_role("link", name="Referrals", exact=True).click()
    await coordinator.get_by_label("Status").select_option("closed")
    await coordinator.get_by_role("button", name="Filter").click()
    assert "stu-77" in await coordinator.locator("table").inner_text()
    await site.accessible(coordinator)
    assert {"/", "/families/new", "/referrals/new", "/referrals/{id}", "/referrals"} \
        <= site.checked


async def test_a_form_error_is_shown_beside_its_field(site: Site) -> None:
    page = await site.sign_in("coordinator", schools=("lincoln-es",))
    await page.goto("/families/new")
    await page.get_by_label("Family name").fill("Familia Tran")
    await page.get_by_label("Mobile phone").fill("12345")
    await page.get_by_role("button", name="Register and open a referral").click()
    error = page.locator("#phone-error")
    assert await error.count() == 1 and await error.inner_text()  # the API's own message
    assert await page.get_by_label("Mobile phone").get_attribute("aria-invalid") == "true"
    assert await page.get_by_label("Family name").input_value() == "Familia Tran"
    await site.accessible(page)


async def test_isolation_between_schools_partners_and_districts(site: Site) -> None:
    dental = await _partner(site, "Smile Bright Dental", ["lincoln-es"])
    other = await _partner(site, "Roosevelt Tutors", ["roosevelt-ms"], needs=("tutoring",))
    lincoln = await site.sign_in("coordinator", schools=("lincoln-es",))
    referral_id = await _register_and_open(site, lincoln, "Familia Soto", "+14155550124",
                                           "stu-88")
    await _until_text(lincoln, "Smile Bright Dental")

    checks = [
        await site.sign_in("coordinator", schools=("roosevelt-ms",)),
        await site.sign_in("partner", partner_id=other["id"]),
        await site.sign_in("district_admin", district="d002"),
        await site.sign_in("coordinator", district="d002", schools=("lakeview-hs",)),
    ]
    for page in checks:
        assert "stu-88" not in await page.locator("main").inner_text()
        await page.goto(f"/referrals/{referral_id}")  # typing its address
        main = await page.locator("main").inner_text()
        assert "Not found" in main or "Not yours" in main, (page.url, main)
        assert "stu-88" not in main and "Familia Soto" not in main
        await site.accessible(page)
        answer = await page.request.post(f"/referrals/{referral_id}/close", form={
            "csrf": await _csrf(page), "outcome": "services_received"})
        assert answer.status in (403, 404)
    # The partner it was matched to does see it.
    mine = await site.sign_in("partner", partner_id=dental["id"])
    assert "stu-88" in await mine.locator("main").inner_text()


async def _csrf(page: Any) -> str:
    return str(await page.locator("input[name=csrf]").first.get_attribute("value"))


async def test_a_form_without_its_csrf_token_is_refused(site: Site) -> None:
    page = await site.sign_in("coordinator", schools=("lincoln-es",))
    before = await site.admin.get("/api/v1/families", params={"district_id": "d001"})
    form = {"school_id": "lincoln-es", "name": "Familia Forged", "email": "f@example.org"}
    refused = await page.request.post("/families", form=form, max_redirects=0)
    assert refused.status == 403 and "security token" in await refused.text()
    forged = await page.request.post("/families", form=form | {"csrf": "guessed"},
                                     max_redirects=0)
    assert forged.status == 403
    after = await site.admin.get("/api/v1/families", params={"district_id": "d001"})
    assert len(after.json()) == len(before.json())  # nothing was registered
    # With its token the same form goes through.
    sent = await page.request.post("/families", form=form | {"csrf": await _csrf(page)},
                                   max_redirects=0)
    assert sent.status == 303 and "/referrals/new?" in sent.headers["location"]
    await page.goto("/")  # the refusal page itself, as a person sees it
    await page.set_content(await refused.text())
    await site.accessible(page)


async def test_an_ended_session_returns_to_the_page(site: Site) -> None:
    page = await site.sign_in("coordinator", schools=("lincoln-es",))
    await page.goto("/referrals?urgency=crisis")
    [cookie] = [c for c in await page.context.cookies() if c["name"] == sessions.COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    # The same session, run out: signed with the console's secret, its expiry in the past.
    secret = console_settings(site.settings).console_session_secret
    current = sessions.decode(secret, cookie["value"])
    assert current.principal is not None
    ended = replace(current, expires=datetime.now(UTC) - timedelta(minutes=1))
    await page.context.add_cookies([{"name": sessions.COOKIE, "url": site.url,
                                     "value": sessions.encode(secret, ended)}])
    await page.reload()
    assert "/sign-in?next=" in page.url
    assert "Your session ended" in await page.locator("main").inner_text()
    await site.accessible(page)
    await site.sign_in("coordinator", schools=("lincoln-es",), page=page)
    assert page.url == f"{site.url}/referrals?urgency=crisis"


def _hsds_zip(folder: Path) -> Path:
    """A small HSDS directory with bad rows, from the generator the importer's tests use."""
    from support.generators import gen

    path = folder / "directory.zip"
    path.write_bytes(gen.build(organizations=6).zip())
    return path


async def _facts_fit(page: Any) -> None:
    """No value of a page's facts runs out of its column over the next one (a long email or
    id once overlapped the value beside it)."""
    over = await page.eval_on_selector_all(
        ".facts dd", "els => els.filter(e => e.scrollWidth > e.clientWidth + 1)"
                     ".map(e => e.textContent)")
    assert over == [], over


async def test_families_partners_gaps_and_audit_pages(site: Site, tmp_path: Path) -> None:
    partner = await _partner(site, "Smile Bright Dental", ["lincoln-es"])
    admin = await site.sign_in("district_admin")
    await site.accessible(admin)

    # Families: register one, find it by name, edit its contact details, log a call.
    referral_id = await _register_and_open(site, admin, "Familia Nguyen", "+14155550125",
                                           "stu-99")
    await admin.get_by_role("link", name="Families", exact=True).click()
    await admin.get_by_label("Name").fill("nguyen")
    await admin.get_by_role("button", name="Find").click()
    await site.accessible(admin)
    await admin.get_by_role("link", name="Familia Nguyen").click()
    await site.accessible(admin)
    edit = admin.locator("#edit")
    await edit.get_by_label("Mobile phone").fill("12345")
    await edit.get_by_role("button", name="Save").click()
    assert await admin.locator("#edit #phone-error").inner_text()  # the API's message
    long_email = "nguyen.tran.household@example.org"  # wider than a column of the facts
    await admin.locator("#edit").get_by_label("Email", exact=True).fill(long_email)
    await admin.locator("#edit").get_by_label("Mobile phone").fill("+14155550126")
    await admin.locator("#edit").get_by_role("button", name="Save").click()
    assert long_email in await admin.locator(".facts").inner_text()
    await _facts_fit(admin)
    log = admin.locator("#log")
    await log.get_by_label("How").select_option("home_visit")
    await log.get_by_label("Note (optional)").fill("met at home")
    await log.get_by_role("button", name="Log it").click()
    contacts = await admin.locator("#contacts").locator("..").inner_text()
    assert "home visit" in contacts and "met at home" in contacts
    await site.accessible(admin)

    # Partners: the directory by need, a partner's slots, a capacity edit.
    await admin.get_by_role("link", name="Partners", exact=True).click()
    await admin.get_by_label("Need").select_option("dental")
    await admin.get_by_role("button", name="Filter").click()
    await site.accessible(admin)
    await admin.get_by_role("link", name="Smile Bright Dental").click()
    assert partner["id"] in await admin.locator(".facts").inner_text()
    await _facts_fit(admin)
    await admin.get_by_label("Slots at Lincoln Elementary").fill("7")
    await admin.get_by_role("button", name="Save").first.click()
    assert "Capacity saved." in await admin.locator("main").inner_text()
    await site.accessible(admin)
    now = await site.admin.get(f"/api/v1/partners/{partner['id']}",
                               params={"district_id": "d001"})
    assert now.json()["services"][0]["capacity_by_school"][0]["capacity"] == 7

    # The HSDS import and its row-by-row report.
    await admin.goto("/partners/import")
    await site.accessible(admin)
    await admin.get_by_label("HSDS file: a zip of CSV tables, or HSDS JSON").set_input_files(
        str(_hsds_zip(tmp_path)))
    await admin.get_by_role("button", name="Import", exact=True).click()
    report = await admin.locator("main").inner_text()
    assert "Errors: rows left out" in report and "cost_options.csv" in report
    await site.accessible(admin)

    # The gap map, and its CSV.
    await admin.goto("/gaps")
    assert "Lincoln Elementary" in await admin.locator("table.grid").inner_text()
    await site.accessible(admin)
    this_month = await admin.get_by_label("From").input_value()  # the period shown is filled in
    assert this_month.endswith("-01") and await admin.get_by_label("To (included)").input_value()
    await admin.get_by_label("From").fill("2020-01-01")
    await admin.get_by_label("To (included)").fill("2020-01-31")
    await admin.get_by_role("button", name="Show").click()
    # The period asked, its last day as asked (the API's end is the day after, exclusive).
    assert "from 2020-01-01 to 2020-01-31." in await admin.locator("main > p").first.inner_text()
    assert await admin.get_by_label("To (included)").input_value() == "2020-01-31"
    csv = await admin.request.get("/gaps.csv?start=2020-01-01")
    assert csv.headers["content-type"].startswith("text/csv")
    assert (await csv.text()).startswith("school_id,need,")

    # A district admin's audit trail of the referral.
    await admin.goto(f"/referrals/{referral_id}")
    await admin.get_by_role("link", name="Audit trail: who read or changed it").click()
    trail = await admin.locator("table").inner_text()
    assert "district_admin-1" in trail and "read" in trail, trail
    await site.accessible(admin)
    # The district's settings, read only.
    await admin.get_by_role("link", name="District", exact=True).click()
    district = await admin.locator("main").inner_text()
    assert "America/Los_Angeles" in district and "Development sign-in is on" in district
    await site.accessible(admin)
    # A coordinator is refused the trail by the API, and the page says so.
    coordinator = await site.sign_in("coordinator", schools=("lincoln-es",))
    await coordinator.goto(f"/referrals/{referral_id}/audit")
    assert "Not yours to see" in await coordinator.locator("h1").inner_text()


async def test_english_and_spanish(site: Site) -> None:
    page = await site.sign_in("coordinator", schools=("lincoln-es",))
    assert await page.locator("h1").inner_text() == "Today"
    await page.get_by_role("button", name="Español").click()
    assert await page.locator("h1").inner_text() == "Hoy"
    assert await page.locator("html").get_attribute("lang") == "es"
    await site.accessible(page)
    await page.get_by_role("button", name="English").click()
    assert await page.locator("h1").inner_text() == "Today"
    # The browser's language when no switch was used.
    context = await site.browser.new_context(base_url=site.url, locale="es-MX")
    spanish = await context.new_page()
    await spanish.goto("/sign-in")
    assert await spanish.locator("h1").inner_text() == "Entrar"


async def test_family_events_and_announcements(site: Site) -> None:
    family = await site.admin.post("/api/v1/families", json={
        "district_id": "d001", "school_id": "lincoln-es", "name": "Familia Lopez",
        "preferred_language": "es", "email": "lopez@example.org"})
    assert family.status_code == 201, family.text
    page = await site.sign_in("coordinator", schools=("lincoln-es",))
    await page.get_by_role("link", name="Family events").click()
    await site.accessible(page)
    await page.get_by_label("Title").fill("Family math night")
    await page.get_by_label("Starts (the school's time)").fill("2027-01-12T18:00")
    await page.get_by_label("Place").fill("Library")
    await page.get_by_role("button", name="Create the event").click()
    await page.wait_for_url(re.compile(r"/events/[0-9a-f-]{36}"))
    facts = await page.locator(".facts").inner_text()
    assert "6:00" in facts  # the school's clock, as typed
    await page.get_by_role("button", name="Send the invitations").click()
    await _until_text(page, "All 1 messages are through.")
    await page.get_by_label("Familia Lopez came").check()
    await page.get_by_role("button", name="Save attendance").click()
    assert "Attended\n1" in await page.locator(".facts").inner_text()
    await site.accessible(page)

    await page.get_by_role("link", name="Announcements").click()
    await page.get_by_label("Title").fill("No school Friday")
    await page.get_by_label("Message").fill("The school is closed on Friday.")
    await page.get_by_role("button", name="Send", exact=True).click()
    await page.wait_for_url(re.compile(r"/announcements/[0-9a-f-]{36}"))
    await _until_text(page, "All 1 messages are through.")
    await site.accessible(page)
    await page.get_by_role("link", name="All announcements").click()
    assert "No school Friday" in await page.locator("table").inner_text()
    await site.accessible(page)
    # An empty title is the API's error beside the field.
    await page.get_by_role("button", name="Send", exact=True).click()
    assert await page.locator("#title-error").count() == 1


async def _tab_to(page: Any, selector: str) -> None:
    """Press Tab until the element matching ``selector`` has the focus (as a keyboard user)."""
    for _ in range(60):
        if await page.evaluate("s => document.activeElement?.matches(s) ?? false", selector):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"{selector} is not reachable with Tab on {page.url}")


async def test_keyboard_alone_signs_in_and_registers_a_family(site: Site) -> None:
    page = await site.page()
    await page.goto("/sign-in")
    await _tab_to(page, "a.skip")  # the first stop: skip to the content
    await page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    await _tab_to(page, "#f-role")
    await page.keyboard.type("district")  # a select answers to typing its option's words
    await _tab_to(page, "button.primary")
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{site.url}/")
    assert await page.locator("h1").inner_text() == "Today"
    await _tab_to(page, "main a[href='/families/new']")
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{site.url}/families/new")
    await _tab_to(page, "#f-name")
    await page.keyboard.type("Familia Keys")
    await _tab_to(page, "#f-email")
    await page.keyboard.type("keys@example.org")
    await _tab_to(page, "main button.primary")
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"/referrals/new\?"))
    assert "Familia Keys" in await page.locator("#f-family_id option:checked").inner_text()


async def test_partner_declines_with_a_reason_and_the_next_serves(site: Site) -> None:
    first = await _partner(site, "Smile Bright Dental", ["lincoln-es"])
    coordinator = await site.sign_in("coordinator", schools=("lincoln-es",))
    referral_id = await _register_and_open(site, coordinator, "Familia Diaz", "+14155550127",
                                           "stu-55")
    await _until_text(coordinator, "Smile Bright Dental")
    # Opening it again shows the open one instead of a second referral.
    await coordinator.goto("/referrals/new")
    diaz = await coordinator.locator("#f-family_id option", has_text="Diaz").get_attribute(
        "value")
    await coordinator.get_by_label("Family", exact=True).select_option(diaz)
    await coordinator.get_by_label("Student reference (the district's id, not a name)").fill(
        "stu-55")
    await coordinator.get_by_label("Need", exact=True).select_option("dental")
    await coordinator.get_by_role("button", name="Open the referral").click()
    await coordinator.wait_for_url(re.compile(rf"/referrals/{referral_id}\?duplicate=1"))
    assert "already had an open referral" in await coordinator.locator("main").inner_text()
    await site.accessible(coordinator)

    second = await _partner(site, "Lincoln Family Dentistry", ["lincoln-es"])
    staff = await site.sign_in("partner", partner_id=first["id"])
    await staff.goto(f"/referrals/{referral_id}")
    await staff.get_by_label("Reason for declining").select_option("no_capacity")
    await staff.get_by_role("button", name="Decline").click()
    await staff.wait_for_load_state()
    assert "stu-55" not in await staff.locator("main").inner_text()  # no longer theirs

    other = await site.sign_in("partner", partner_id=second["id"])
    await _until_text(other, "stu-55")
    await other.locator(f"a[href='/referrals/{referral_id}']").click()
    await other.get_by_role("button", name="Accept the referral").click()
    await other.get_by_role("button", name="Mark in service").click()
    await other.wait_for_load_state()
    assert "in service" in await other.locator(".facts").inner_text()
    await site.accessible(other)
    await coordinator.goto(f"/referrals/{referral_id}")
    timeline = await coordinator.locator(".timeline").inner_text()
    assert "Partner declined" in timeline and "no capacity" in timeline
    assert "Lincoln Family Dentistry" in await coordinator.locator("#match").locator(
        "..").inner_text()


async def test_a_form_sent_twice_registers_and_opens_once(site: Site) -> None:
    """A double click, or the browser resending the form: the form's key (``once``) goes to
    the API as Idempotency-Key, so the family and its referral are made once."""
    page = await site.sign_in("coordinator", schools=("lincoln-es",))
    await page.goto("/families/new")
    once = await page.locator("input[name=once]").get_attribute("value")
    assert once, "the form carries its key"
    form = {"csrf": await _csrf(page), "once": once, "school_id": "lincoln-es",
            "name": "Familia Twice", "email": "twice@example.org", "preferred_language": "es",
            "preferred_channel": "email", "email_consent": "on"}
    sent = [await page.request.post("/families", form=form, max_redirects=0)
            for _ in range(2)]
    assert [s.status for s in sent] == [303, 303]
    assert sent[0].headers["location"] == sent[1].headers["location"]  # the same family
    families = (await site.admin.get("/api/v1/families", params={
        "district_id": "d001", "limit": 500})).json()
    assert [f["name"] for f in families].count("Familia Twice") == 1

    await page.goto(sent[0].headers["location"])
    referral_once = await page.locator("input[name=once]").get_attribute("value")
    assert referral_once and referral_once != once  # each form shown has its own
    family_id = sent[0].headers["location"].split("family_id=")[1].split("&")[0]
    opened = {"csrf": await _csrf(page), "once": referral_once, "school_id": "lincoln-es",
              "family_id": family_id, "student_ref": "stu-twice", "need": "vision",
              "urgency": "routine", "consent": "pending"}
    answers = [await page.request.post("/referrals", form=opened, max_redirects=0)
               for _ in range(2)]
    assert [a.status for a in answers] == [303, 303]
    # The resend is the same request answered again, not an open duplicate found.
    first, second = (a.headers["location"] for a in answers)
    assert first == second and first.endswith("?opened=1"), (first, second)


@pytest.fixture
def quiet_all_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requested before `site`, after the autouse no_quiet_hours: quiet all day but the last
    minute, so a routine message is held whenever the test runs."""
    monkeypatch.setenv("ENSEMBLE_QUIET_HOURS_START", "00:00")
    monkeypatch.setenv("ENSEMBLE_QUIET_HOURS_END", "23:59")


async def test_a_message_held_for_quiet_hours_says_until_when(quiet_all_day: None,
                                                              site: Site) -> None:
    await _partner(site, "Smile Bright Dental", ["lincoln-es"])
    coordinator = await site.sign_in("coordinator", schools=("lincoln-es",))
    referral_id = await _register_and_open(site, coordinator, "Familia Soto", "+14155550188",
                                           "stu-88")
    await _until_text(coordinator, "held: quiet hours")
    row = await coordinator.locator("#outreach").locator("..").locator("tbody tr").inner_text()
    # Lincoln Elementary is in Los Angeles: held until 11:59 PM there, as the school reads it.
    assert re.search(r"held: quiet hours until \w{3} \d{1,2}, \d{4}, 11:59:00\s?PM", row), row
    await site.accessible(coordinator)
    messages = (await site.admin.get("/api/v1/messages", params={
        "district_id": "d001", "referral_id": referral_id})).json()
    assert [m["held_reason"] for m in messages] == ["quiet_hours"]
