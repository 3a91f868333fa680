"""The console's own keys over real HTTP: the services check the console's API tokens against
its /.well-known/jwks.json, refuse the development secret's tokens, and keep answering a
signed-in person while the console's key is rotated (new key active, old one retired)."""

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import _QuietServer, token
from support.waiting import eventually
from typer.testing import CliRunner

from ensemble.cli import app as cli
from ensemble.system import build_console, build_services, console_settings
from runtime.auth import issue_token
from runtime.host import create_app
from runtime.keys import SigningKeys, new_key, write_jwks
from runtime.settings import Settings


@pytest.fixture
def backend() -> Iterator[dict[str, str]]:
    """SQLite only: the door is the same on either database."""
    yield {}


@contextlib.asynccontextmanager
async def _system(settings: Settings) -> AsyncIterator[str]:
    services = build_services(settings)
    for service in services:
        await service.runtime.migrate()
    app = create_app(services, web=build_console(console_settings(settings, dev_sign_in=True)))
    port = int(settings.public_base_url.rsplit(":", 1)[1])
    server = _QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                         access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield settings.public_base_url
    finally:
        server.should_exit = True
        await task


async def _sign_in(http: httpx.AsyncClient) -> None:
    page = await http.get("/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    done = await http.post("/sign-in", data={"csrf": csrf.group(1), "role": "district_admin",
                                             "district": "d001", "subject": "ana"})
    assert done.status_code == 303, done.text


async def test_services_check_the_consoles_published_keys_through_a_rotation(
        settings: Settings, tmp_path: Path) -> None:
    keys_file = tmp_path / "signing-keys.json"
    write_jwks(keys_file, {"keys": [new_key("ES256")]})
    settings = settings.model_copy(update={
        "signing_keys_file": keys_file, "jwks_cache_seconds": 1,
        "jwks_url": f"{settings.public_base_url}/.well-known/jwks.json"})
    keys = SigningKeys(keys_file)
    old_kid = keys.active_kid
    old_file = tmp_path / "old-key.json"
    old_file.write_bytes(keys_file.read_bytes())
    async with _system(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        published = (await http.get("/.well-known/jwks.json")).json()["keys"]
        assert [k["kid"] for k in published] == [old_kid] and "d" not in published[0]
        # The development secret opens nothing once a JWKS is configured.
        dev = token(settings, "district_admin", "d001")
        refused = await http.get("/api/v1/referrals", params={"district_id": "d001"},
                                 headers={"Authorization": f"Bearer {dev}"})
        assert refused.status_code == 401, refused.text
        await _sign_in(http)
        assert (await http.get("/referrals")).status_code == 200  # an ES256 token accepted
        # Rotation while signed in: a new key signs, the old one is still published...
        runner = CliRunner()
        assert runner.invoke(cli, ["keys", "new", str(keys_file), "--activate"]).exit_code == 0
        new_kid = keys.active_kid
        published = (await http.get("/.well-known/jwks.json")).json()["keys"]
        assert [k["kid"] for k in published] == [new_kid, old_kid]
        assert (await http.get("/referrals")).status_code == 200
        # ... then retired: the person is still served, with tokens of the new key.
        assert runner.invoke(cli, ["keys", "retire", str(keys_file), old_kid]).exit_code == 0
        assert (await http.get("/referrals")).status_code == 200
        # A token the retired key signed is refused once the services read the JWKS again
        # (ENSEMBLE_JWKS_CACHE_SECONDS, here 1).
        retired = SigningKeys(old_file)
        assert retired.active_kid == old_kid
        stale = issue_token(retired, subject="x", role="district_admin", district="d001")

        async def refused_now() -> str | None:
            gone = await http.get("/api/v1/referrals", params={"district_id": "d001"},
                                  headers={"Authorization": f"Bearer {stale}"})
            return gone.text if gone.status_code == 401 else None

        assert "no published key" in await eventually(refused_now, "old key refused", 20)
