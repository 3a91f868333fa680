"""`python -m ensemble.screenshots`: runs the demo system and photographs the console's Today
page and a referral's page into docs/, for the README. Needs the test extra (Playwright) and
Debian's chromium (/usr/bin/chromium)."""

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ensemble.demo import run_demo
from ensemble.embedded import free_port
from ensemble.system import serving_embedded
from runtime.auth import issue_token
from runtime.settings import REPO_ROOT, Settings

CHROMIUM = "/usr/bin/chromium"
DOCS = REPO_ROOT / "docs"


async def photograph(out: Path) -> list[Path]:
    from playwright.async_api import async_playwright

    os.environ.setdefault("ENSEMBLE_QUIET_HOURS_START", "00:00")  # as the demo does
    os.environ.setdefault("ENSEMBLE_QUIET_HOURS_END", "00:00")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = Path(tempfile.mkdtemp(prefix="ensemble-screenshots-"))
    written = []
    try:
        async with serving_embedded(Settings(data_dir=data), {}, port) as s:
            admin = issue_token(s.jwt_secret, subject="demo", role="district_admin",
                                district="d001")
            if not await run_demo(url, admin, mail_dir=data / "mailbox",
                                  sms_url=s.sms_api_url):
                raise RuntimeError("the demo did not finish")
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=CHROMIUM,
                                                  args=["--no-sandbox"])
                page = await browser.new_page(base_url=url, locale="en-US",
                                              viewport={"width": 1280, "height": 900})
                await page.goto("/sign-in")
                await page.get_by_label("Role").select_option("coordinator")
                for school in ("lincoln-es", "roosevelt-ms"):
                    await page.locator(f"#school-d001-{school}").check()
                await page.get_by_label("Your user id").fill("ms.rivera")
                await page.get_by_role("button", name="Sign in").click()
                await page.wait_for_load_state()
                written.append(out / "console-today.png")
                await page.screenshot(path=str(written[-1]), full_page=True)
                # The dental referral left matched: its match, why, and the message sent.
                await page.get_by_role("link", name="dental · stu-4822").first.click()
                await page.wait_for_load_state()
                written.append(out / "console-referral.png")
                await page.screenshot(path=str(written[-1]), full_page=True)
                await browser.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return written


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    for path in asyncio.run(photograph(DOCS)):
        print(f"wrote {path.relative_to(REPO_ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
