"""Real parts for every integration test: a nats-server with JetStream started per test (or
NATS_URL), SQLite or PostgreSQL (ENSEMBLE_TEST_POSTGRES_URL, else testcontainers where Docker
runs, else skipped with the reason), a real SMTP server, and the services over real HTTP."""

import asyncio
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from support.processes import drop_schemas
from support.waiting import eventually

from ensemble.embedded import DevSmsServer, NatsProcess, free_port
from ensemble.system import build_services
from runtime.auth import issue_token
from runtime.host import Service, create_app
from runtime.settings import SERVICES, Settings
from services.referrals.settings import ReferralsSettings

# Fixtures kept in tests/support/, loaded for every test module.
pytest_plugins = ["support.outreach"]

T = TypeVar("T")


# --- NATS ------------------------------------------------------------------------------------


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    external = os.environ.get("NATS_URL")
    if external:
        asyncio.run(_delete_ensemble_streams(external))
        yield external
        return
    server = NatsProcess(tmp_path / "nats").start()
    try:
        yield server.url
    finally:
        server.stop()


async def _delete_ensemble_streams(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name.startswith("ENSEMBLE_"):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


# --- databases -------------------------------------------------------------------------------


def _postgres_url() -> str | None:
    url = os.environ.get("ENSEMBLE_TEST_POSTGRES_URL")
    if url:
        return url
    return _container_postgres()


_container: Any = None


def _container_postgres() -> str | None:
    global _container
    if _container is not None:
        return str(_container.get_connection_url(driver=None))
    if not shutil.which("docker") or not _docker_runs():
        return None
    from testcontainers.postgres import PostgresContainer

    _container = PostgresContainer("postgres:16-alpine").start()
    return str(_container.get_connection_url(driver=None))


def _docker_runs() -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
        sock.connect("/var/run/docker.sock")
        return True
    return False


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Database settings for all five services on one backend."""
    if request.param == "sqlite":
        yield {}
        return
    url = _postgres_url()
    if url is None:
        pytest.skip("PostgreSQL: set ENSEMBLE_TEST_POSTGRES_URL (Docker does not run here)")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield {f"{s}_database_url": url for s in SERVICES} | {"database_schema_prefix": prefix}
    asyncio.run(drop_schemas(url, prefix))


# --- SMTP and SMS ----------------------------------------------------------------------------


class Inbox:
    """A real SMTP server's handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refuse: int | None = None  # an SMTP code to answer with, to test failures

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return f"{self.refuse} refused for the test"
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, str]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


# --- settings and the running system ---------------------------------------------------------


@pytest.fixture(autouse=True)
def no_quiet_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run at any hour: no quiet hours unless a test sets them (equal ends: none), or a
    test run in the district's evening waits for its morning (tests/support/processes.py does
    the same for service processes)."""
    monkeypatch.setenv("ENSEMBLE_QUIET_HOURS_START", "00:00")
    monkeypatch.setenv("ENSEMBLE_QUIET_HOURS_END", "00:00")


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, backend: dict[str, str],
             smtp: tuple[Inbox, str]) -> Settings:
    port = free_port()
    # Referrals' own settings (a Settings: every other service reads its own from it, and
    # referrals takes this one as it is).
    return ReferralsSettings(
        public_base_url=f"http://127.0.0.1:{port}",
        nats_url=nats_url,
        data_dir=tmp_path / "data",
        smtp_url=smtp[1],
        sms_api_url=f"http://127.0.0.1:{free_port()}",
        max_deliver=3,
        retry_base_seconds=0.05,
        retry_max_seconds=0.5,
        outbox_poll_seconds=0.2,
        family_wait_seconds=2,  # a family that never comes is refused sooner
        **backend,
    )


@dataclass
class System:
    """The services running over real HTTP, NATS, database and SMTP."""

    settings: Settings
    http: httpx.AsyncClient
    services: dict[str, Service]
    inbox: Inbox
    sms_store: Path
    district: str = "d001"
    notes: dict[str, Any] = field(default_factory=dict)

    async def eventually(self, check: Callable[[], Awaitable[T | None]],
                         timeout: float = 15, what: str = "condition") -> T:
        return await eventually(check, what, timeout)

    async def register_partner(self, **overrides: Any) -> dict[str, Any]:
        body = {"district_id": self.district, "name": "Smile Bright Dental", "needs": ["dental"],
                "schools": ["lincoln-es"], "languages": ["en", "es"], "capacity": 2} | overrides
        response = await self.http.post("/api/v1/partners", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def register_family(self, **overrides: Any) -> dict[str, Any]:
        body = {"district_id": self.district, "school_id": "lincoln-es", "name": "Maria Garcia",
                "preferred_language": "es", "email": f"family-{uuid.uuid4().hex[:8]}@example.org",
                "preferred_channel": "email"} | overrides
        response = await self.http.post("/api/v1/families", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def open_referral(self, family: dict[str, Any], **overrides: Any) -> dict[str, Any]:
        body = {"district_id": family["district_id"], "school_id": family["school_id"],
                "student_ref": f"stu-{uuid.uuid4().hex[:8]}", "family_id": family["id"],
                "need": "dental", "urgency": "routine", "consent": "given"} | overrides
        # Back to back with the registration: referrals waits for FamilyRegistered itself.
        response = await self.http.post("/api/v1/referrals", json=body)
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    async def referral(self, referral_id: str, district: str | None = None) -> dict[str, Any]:
        response = await self.http.get(f"/api/v1/referrals/{referral_id}",
                                       params={"district_id": district or self.district})
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def wait_status(self, referral_id: str, status: str,
                          timeout: float = 15) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            detail = await self.referral(referral_id)
            return detail if detail["status"] == status else None

        return await self.eventually(check, timeout, f"referral {status}")


class _QuietServer(uvicorn.Server):
    """Leaves the test process's signal handling alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def running(settings: Settings, services: list[Service],
                  port: int | None = None, *, migrate: bool = True) -> AsyncIterator[str]:
    """Serve services over real HTTP until the block ends (graceful stop), their databases
    made by the migrations (`ensemble migrate`) first, so every test runs on them."""
    for service in services if migrate else ():
        await service.runtime.migrate()
    port = port or free_port()
    server = _QuietServer(uvicorn.Config(create_app(services), host="127.0.0.1", port=port,
                                         log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped during start-up")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def system(settings: Settings, smtp: tuple[Inbox, str]) -> AsyncIterator[System]:
    services = build_services(settings)
    sms_store = settings.data_dir / "sms" / "messages.jsonl"
    sms_port = int(str(settings.sms_api_url).rsplit(":", 1)[1])
    admin = {"Authorization": f"Bearer {token(settings, 'district_admin', 'd001')}"}
    port = int(settings.public_base_url.rsplit(":", 1)[1])
    inbound = f"{settings.public_base_url}/api/v1/sms/inbound"
    async with DevSmsServer(sms_store, sms_port, settings.sms_auth_token, inbound), \
            running(settings, services, port) as url, \
            httpx.AsyncClient(base_url=url, timeout=10, headers=admin) as http:
        yield System(settings, http, {s.name: s for s in services}, smtp[0], sms_store)


def token(settings: Settings, role: str, district: str, schools: tuple[str, ...] = (),
          partner_id: str | None = None) -> str:
    """A bearer token for a test caller (the System client is d001's district admin)."""
    return issue_token(settings.jwt_secret, subject=f"test-{role}", role=role,
                       district=district, schools=schools, partner_id=partner_id)
