"""Builds services and runs them: all six and the console in one process (`ensemble up`) or
one alone."""

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from ensemble.embedded import (
    DataFolderLock,
    DevSmsServer,
    LocalMailServer,
    NatsProcess,
    free_port,
)
from runtime.districts import Districts, load_districts
from runtime.host import Service, create_app, serve
from runtime.migrations import migrate
from runtime.settings import SERVICES, Settings
from services.console.service import build as build_console
from services.console.settings import ConsoleSettings
from services.engagement.service import build as build_engagement
from services.insights.service import build as build_insights
from services.notifications.service import build as build_notifications
from services.partners.service import build as build_partners
from services.referrals.service import build as build_referrals
from services.webhooks.service import build as build_webhooks

log = logging.getLogger("ensemble")

BUILDERS = {
    "referrals": build_referrals,
    "partners": build_partners,
    "engagement": build_engagement,
    "notifications": build_notifications,
    "webhooks": build_webhooks,  # signed deliveries to integrators without NATS
    "insights": build_insights,  # the data packs and staff digests, from public events only
}
assert tuple(BUILDERS) == SERVICES


def build_services(
    settings: Settings, names: tuple[str, ...] = SERVICES, districts: Districts | None = None
) -> list[Service]:
    districts = districts or load_districts(settings.districts_file)
    return [BUILDERS[name](settings, districts) for name in names]


def build_app(settings: Settings, names: tuple[str, ...] = SERVICES, *,
              console: bool = False, dev_sign_in: bool = False) -> FastAPI:
    """The services named, and with ``console`` the console's pages at `/` of the same app."""
    if names == ("console",):
        return create_app([], title="Ensemble console",
                          web=build_console(console_settings(settings, dev_sign_in)))
    title = "Ensemble" if len(names) > 1 else f"Ensemble {names[0]}"
    web = build_console(console_settings(settings, dev_sign_in)) if console else None
    return create_app(build_services(settings, names), title=title, web=web)


def console_settings(settings: Settings, dev_sign_in: bool = False) -> ConsoleSettings:
    """The console's settings from the deployment's (its own fields from the environment);
    ``dev_sign_in`` turns development sign-in on (the embedded default, the demo)."""
    console = ConsoleSettings(**settings.model_dump())
    return console.model_copy(update={"dev_sign_in": True}) if dev_sign_in else console


def dev_mode(env: dict[str, str]) -> bool:
    """Development mode: `ensemble up` on the embedded default (its own nats-server), unless
    ENSEMBLE_DEV_SIGN_IN says otherwise. Anything pointed at real infrastructure is not."""
    explicit = env.get("ENSEMBLE_DEV_SIGN_IN")
    if explicit is not None:
        return explicit.strip().lower() in ("1", "true", "yes", "on")
    return "NATS_URL" not in env


@dataclass
class Embedded:
    """What `ensemble up` starts around the services when no URL points elsewhere."""

    settings: Settings
    nats: NatsProcess | None = None
    mail: LocalMailServer | None = None


@contextmanager
def embedded_infrastructure(settings: Settings, env: dict[str, str],
                            own_url: str) -> Iterator[Embedded]:
    """Start nats-server and the local mailbox unless NATS_URL / SMTP_URL are given; providers
    call back to ``own_url`` unless ENSEMBLE_PUBLIC_BASE_URL says otherwise."""
    data = settings.data_dir.resolve()
    updates: dict[str, object] = {}
    if "ENSEMBLE_PUBLIC_BASE_URL" not in env:
        updates["public_base_url"] = own_url
    nats = mail = lock = None
    try:
        if "NATS_URL" not in env:
            lock = DataFolderLock(data).acquire()
            nats = NatsProcess(data / "nats", die_with_parent=True, lock=lock).start()
            lock.note(f"ensemble up (pid {os.getpid()}) and its nats-server (pid {nats.pid})")
            updates["nats_url"] = nats.url
        if "SMTP_URL" not in env:
            mail = LocalMailServer(data / "mailbox").start()
            updates["smtp_url"] = mail.url
        if "SMS_API_URL" not in env:
            updates["sms_api_url"] = f"http://127.0.0.1:{free_port()}"
        yield Embedded(settings.model_copy(update=updates), nats, mail)
    finally:
        if mail:
            mail.stop()
        if nats:
            nats.stop()
        if lock:
            lock.release()


def dev_sms(settings: Settings, env: dict[str, str], webhook_url: str | None
            ) -> contextlib.AbstractAsyncContextManager[object]:
    """The development SMS provider, unless SMS_API_URL points at a real one."""
    if "SMS_API_URL" in env or not settings.sms_api_url:
        return contextlib.nullcontext()
    return DevSmsServer(settings.data_dir.resolve() / "sms" / "messages.jsonl",
                        int(settings.sms_api_url.rsplit(":", 1)[1]), settings.sms_auth_token,
                        webhook_url)


async def run_up(settings: Settings, env: dict[str, str], host: str, port: int) -> None:
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    with embedded_infrastructure(settings, env, f"http://{local}:{port}") as embedded:
        s = embedded.settings
        log.info("nats %s (nats-server pid %s), smtp %s, sms %s, data %s", s.nats_url,
                 embedded.nats.pid if embedded.nats else "external", s.smtp_url, s.sms_api_url,
                 s.data_dir.resolve())
        dev = dev_mode(env)
        log.info("console at http://%s:%s/ (development sign-in %s)", local, port,
                 "on" if dev else "off")
        await migrate(s, SERVICES)  # what a deployment's `ensemble migrate` step does
        async with dev_sms(s, env, f"http://{host}:{port}/api/v1/sms/inbound"):
            await serve(build_app(s, console=True, dev_sign_in=dev), host, port)


@contextlib.asynccontextmanager
async def serving_embedded(settings: Settings, env: dict[str, str],
                           port: int) -> AsyncIterator[Settings]:
    """The whole system with the console on the embedded default, on loopback ``port``, in
    development mode (the demo, the screenshots), until the block ends."""
    import asyncio

    import uvicorn

    url = f"http://127.0.0.1:{port}"
    with embedded_infrastructure(settings, env, url) as embedded:
        s = embedded.settings
        await migrate(s, SERVICES)
        async with dev_sms(s, env, f"{url}/api/v1/sms/inbound"):
            app = build_app(s, console=True, dev_sign_in=True)
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                   log_config=None, access_log=False))
            serving = asyncio.create_task(server.serve())
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.05)
            try:
                yield s
            finally:
                server.should_exit = True
                await serving


def describe_data(data_dir: Path) -> str:
    return (f"mail: {data_dir / 'mailbox'} (Maildir)  sms: {data_dir / 'sms' / 'messages.jsonl'}")
