"""What the sign-in tests share: a districts file whose d001 signs in with the test's OpenID
Provider (tests/support/oidc_provider.py), the people that provider knows, and the whole system
served as a deployment would run it: no development sign-in, the console signing API tokens
with its own key, the services checking them against its JWKS."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from conftest import _QuietServer

from ensemble.system import build_console, build_services, console_settings
from runtime.host import create_app
from runtime.keys import new_key, write_jwks
from runtime.settings import Settings
from support.oidc_provider import OpenIdProvider, Person

CLIENT_ID = "ensemble-d001"
SECRET_ENV = "TEST_D001_OIDC_SECRET"
PEOPLE = [
    Person("ada", "ada@riverside.example", "Ada Admin", ["staff", "ensemble-admins"]),
    Person("cora", "cora@riverside.example", "Cora Coordinator",
           ["staff", "lincoln-coordinators"]),
    Person("pat", "pat@smilebright.example", "Pat Partner", []),
    Person("nobody", "nobody@riverside.example", "Nobody Mapped", ["cafeteria"]),
]


def districts_toml(issuer: str) -> str:
    return f'''
[[districts]]
id = "d001"
name = "Riverside Unified"
timezone = "America/Los_Angeles"
languages = ["en", "es"]

[[districts.schools]]
id = "lincoln-es"
name = "Lincoln Elementary"

[[districts.schools]]
id = "roosevelt-ms"
name = "Roosevelt Middle School"

[[districts.sign_in]]
id = "test-op"
label = "Sign in with Riverside account"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret_env = "{SECRET_ENV}"
scopes = ["openid", "email", "profile", "groups"]

[[districts.sign_in.roles]]
claim = "groups"
equals = "ensemble-admins"
role = "district_admin"

[[districts.sign_in.roles]]
claim = "groups"
equals = "lincoln-coordinators"
role = "coordinator"
schools = ["lincoln-es"]

[[districts.sign_in.roles]]
claim = "email"
ends_with = "@smilebright.example"
role = "partner"
partner_id = "p-smile"

[[districts]]
id = "d002"
name = "Lakeview School District"
timezone = "America/Chicago"

[[districts.schools]]
id = "lakeview-hs"
name = "Lakeview High School"
'''


@dataclass
class SignInSystem:
    url: str
    settings: Settings
    provider: OpenIdProvider
    keys_file: Path


@contextlib.asynccontextmanager
async def signin_system(settings: Settings, tmp_path: Path, secret: str
                        ) -> AsyncIterator[SignInSystem]:
    """``secret`` must already be in the environment as SECRET_ENV (monkeypatch.setenv)."""
    base = settings.public_base_url
    keys_file = tmp_path / "console-keys.json"
    write_jwks(keys_file, {"keys": [new_key("ES256")]})
    with OpenIdProvider(CLIENT_ID, secret, f"{base}/sign-in/callback", f"{base}/sign-in",
                        PEOPLE) as provider:
        districts = tmp_path / "districts.toml"
        districts.write_text(districts_toml(provider.issuer))
        settings = settings.model_copy(update={
            "districts_file": districts, "signing_keys_file": keys_file,
            "jwks_url": f"{base}/.well-known/jwks.json", "jwks_cache_seconds": 2})
        services = build_services(settings)
        for service in services:
            await service.runtime.migrate()
        app = create_app(services, web=build_console(console_settings(settings)))
        port = int(base.rsplit(":", 1)[1])
        server = _QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port,
                                             log_config=None, access_log=False, lifespan="on"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        try:
            yield SignInSystem(base, settings, provider, keys_file)
        finally:
            server.should_exit = True
            await task
