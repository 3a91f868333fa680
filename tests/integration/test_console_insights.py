"""The data pack in the console: a signed-in district admin opens the pack page, its PDF and a
table as CSV through the console (with their own token), over the insights service running on
a real nats-server."""

import asyncio
import re
from datetime import UTC, datetime

import httpx
import nats
import pytest
import uvicorn
from conftest import _QuietServer
from support.waiting import eventually

from benchmarks.district_year import district_year, publish
from ensemble.system import build_console, console_settings
from runtime.host import create_app
from runtime.settings import Settings
from services.insights.rebuild import caught_up
from services.insights.service import build

END = datetime(2026, 4, 1, 12, tzinfo=UTC)
MONTH = "2026-03"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_district_admin_reads_the_pack_in_the_console(settings: Settings) -> None:
    service = build(settings)
    await service.runtime.migrate()
    app = create_app([service], web=build_console(console_settings(settings, dev_sign_in=True)))
    port = int(settings.public_base_url.rsplit(":", 1)[1])
    server = _QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                         lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        nc = await nats.connect(settings.nats_url)
        try:
            await publish(nc.jetstream(), list(district_year(
                60, district="d001", schools=["lincoln-es"], end=END, seed=9)))
        finally:
            await nc.close()
        await eventually(lambda: caught_up(service.runtime), "the store caught up", 120, 0.5)
        async with httpx.AsyncClient(base_url=settings.public_base_url, timeout=30) as http:
            page = await http.get("/sign-in")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            signed = await http.post("/sign-in", data={
                "csrf": csrf.group(1), "role": "district_admin", "district": "d001"})
            assert signed.status_code == 303
            pack = await http.get(f"/insights/packs/{MONTH}")
            assert pack.status_code == 200, pack.text
            assert pack.text.count("<svg") == 3 and "/api/v1/" not in pack.text
            assert f'href="/insights/packs/{MONTH}/pdf"' in pack.text
            pdf = await http.get(f"/insights/packs/{MONTH}/pdf")
            assert pdf.headers["content-type"] == "application/pdf"
            assert pdf.content.startswith(b"%PDF")
            table = await http.get(f"/insights/packs/{MONTH}/tables/referrals_opened.csv")
            assert table.text.startswith("Need,2025-04,")
            assert (await http.get("/insights/packs/2026-13")).status_code == 422
    finally:
        server.should_exit = True
        await task
