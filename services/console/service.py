"""Assembles the console: a web part for runtime.host (no database, no consumers)."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import APIRouter, FastAPI
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from runtime.districts import Districts, load_districts
from runtime.host import Web
from runtime.keys import SigningKeys
from services.console import (
    directory,
    families,
    insights,
    outreach,
    pages,
    partner_links,
    signin,
)
from services.console.audit import SignInAudit
from services.console.i18n import load_translators
from services.console.oidc import OpenIdClient
from services.console.reasons import in_words
from services.console.settings import ConsoleSettings
from services.console.tokens import ApiTokens

NAME = "console"
HERE = Path(__file__).parent


def templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["j2", "html"], default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    # A code and its words, for <select> options: values|map("string")|map("pair", _).
    env.filters["pair"] = lambda value, translate: (value, translate(value))
    env.filters["translate"] = lambda value, translate: translate(value)
    # Partners' reasons for a match, in the reader's words: reason|in_words(_, school_name).
    env.filters["in_words"] = in_words
    return env


def build(settings: ConsoleSettings, districts: Districts | None = None) -> Web:
    districts = districts or load_districts(settings.districts_file)
    keys = SigningKeys(settings.signing_keys_file) if settings.signing_keys_file else None
    tokens = ApiTokens(keys, settings.jwt_secret, settings.access_token_minutes)
    # httpx logs every call's URL at INFO; a page makes several. Failures reach the pages.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=settings.console_api_timeout_seconds) as http:
            app.state.console = pages.Console(
                settings, districts, templates(), http, load_translators(), tokens,
                OpenIdClient(http), SignInAudit(settings.sign_in_audit_dir))
            yield

    router = APIRouter()
    for part in (signin.router, partner_links.router, pages.router, families.router,
                 directory.router, outreach.router, insights.router):
        router.include_router(part)
    return Web(NAME, router, lifespan=lifespan, static=("/static", str(HERE / "static")),
               exception_handlers=pages.EXCEPTION_HANDLERS)
