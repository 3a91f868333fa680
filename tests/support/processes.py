"""Services as separate OS processes, NATS as one node or a three-node cluster, and the outreach
sinks (SMTP, dev SMS) in the test process: each can be killed (SIGKILL), stopped (SIGTERM) and
started again, so a test can break exactly one part of the system and watch the rest.

Every process writes its output to a file under the run's directory (services/<name>-<copy>.log,
nats/<node>/nats-server.log); failures quote the tail of the file that explains them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from aiosmtpd.controller import Controller

from ensemble.embedded import free_port, nats_server_binary
from runtime.settings import SERVICES as ALL_SERVICES

if TYPE_CHECKING:
    from tests.support.ledger import Ledger

REPO = Path(__file__).resolve().parents[2]
# Where the service processes run from: this checkout, or another (e.g. a `git archive` of a
# commit while services/ is being edited) named by ENSEMBLE_TEST_SOURCE.
SOURCE = Path(os.environ.get("ENSEMBLE_TEST_SOURCE") or REPO)
SERVICES = ("referrals", "partners", "engagement", "notifications")
DISTRICTS_FILE = SOURCE / "deploy" / "districts.toml"
SMS_AUTH_TOKEN = "dev-token"
JWT_SECRET = "ensemble-multiprocess-tests-0123456789abcdef"

# Delivery settings for tests: retries quick enough to finish in seconds, enough attempts that a
# fault lasting a few seconds never exhausts them (0.2+0.4+0.8+1.6+2*5 s before a dead letter).
TEST_ENV = {
    "ENSEMBLE_LOG_LEVEL": "WARNING",
    "ENSEMBLE_MAX_DELIVER": "10",
    "ENSEMBLE_RETRY_BASE_SECONDS": "0.2",
    "ENSEMBLE_RETRY_MAX_SECONDS": "2",
    "ENSEMBLE_OUTBOX_POLL_SECONDS": "0.2",
    # Tests and benchmarks run at any hour: no quiet hours (equal ends), or every routine
    # message is held overnight in the district's time zone and the run waits for the morning.
    "ENSEMBLE_QUIET_HOURS_START": "00:00",
    "ENSEMBLE_QUIET_HOURS_END": "00:00",
}


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"(no {path})"


def die_with_parent() -> None:
    """Linux: the child is SIGKILLed when the test process dies (a timeout, a Ctrl-C), so an
    interrupted run never leaves services or nats-servers behind."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# --- NATS ------------------------------------------------------------------------------------


@dataclass
class NatsNode:
    """One nats-server with JetStream, configured like deploy/nats/nats-server.conf."""

    name: str
    root: Path
    client_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def log(self) -> Path:
        return self.root / "nats-server.log"

    def write_config(self, routes: list[int] | None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        cluster = ""
        if routes:
            route_urls = "\n".join(f"    nats-route://127.0.0.1:{p}" for p in routes)
            cluster = (
                f"cluster {{\n  name: ensemble\n  listen: 127.0.0.1:{self.cluster_port}\n"
                f"  routes: [\n{route_urls}\n  ]\n}}\n"
            )
        conf = self.root / "nats-server.conf"
        conf.write_text(
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f"http: 127.0.0.1:{self.http_port}\n"
            f'log_file: "{self.log}"\n'
            f"jetstream {{\n  store_dir: \"{self.root / 'store'}\"\n"
            f"  sync_interval: always\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}}\n"
            f"{cluster}"
        )
        return conf

    def start(self) -> None:
        conf = self.root / "nats-server.conf"
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    async def wait_healthy(self, timeout: float = 60) -> None:
        """/healthz answers 200 once this node's JetStream is current with its cluster."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"nats {self.name} exited:\n{tail(self.log)}")
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"http://127.0.0.1:{self.http_port}/healthz")
                    if response.status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nats {self.name} not healthy:\n{tail(self.log)}")
                await asyncio.sleep(0.2)


class Nats:
    """A single node (``size=1``, no cluster block) or a cluster with routes between all."""

    def __init__(self, root: Path, size: int = 1) -> None:
        self.nodes = [NatsNode(f"n{i + 1}", root / f"n{i + 1}") for i in range(size)]
        routes = [n.cluster_port for n in self.nodes] if size > 1 else None
        for node in self.nodes:
            node.write_config(routes)

    @property
    def url(self) -> str:
        return ",".join(n.url for n in self.nodes)

    async def start(self) -> None:
        for node in self.nodes:
            node.start()
        await asyncio.gather(*(n.wait_healthy() for n in self.nodes))
        await self.wait_meta_leader()

    async def wait_meta_leader(self, timeout: float = 60) -> str:
        """A cluster answers JetStream API calls only once it has elected a meta leader;
        /healthz can say ok before that on a fresh cluster."""
        if len(self.nodes) == 1:
            return self.nodes[0].name
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                for node in self.nodes:
                    if node.process is None or node.process.poll() is not None:
                        continue
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        jsz = (await client.get(f"http://127.0.0.1:{node.http_port}/jsz")).json()
                        leader = (jsz.get("meta_cluster") or {}).get("leader")
                        if leader:
                            return str(leader)
                if time.monotonic() > deadline:
                    raise RuntimeError("no JetStream meta leader elected")
                await asyncio.sleep(0.2)

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# --- the outreach sinks in the test process ---------------------------------------------------


class MailSink:
    """A real SMTP server (aiosmtpd, its own thread) keeping every message; stop() and start()
    make the relay go away and come back on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self.messages)


class SmsSink:
    """The dev SMS provider (services.notifications.dev_sms) served from its own thread, so a
    busy test event loop never slows the services' sends. ``failing`` = "transient" makes it
    answer 503 until set back to None."""

    def __init__(self, store: Path, port: int | None = None) -> None:
        from services.notifications.dev_sms import create_dev_sms_app

        self.store = store
        self.port = port or free_port()
        self.app = create_dev_sms_app(store, SMS_AUTH_TOKEN)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def failing(self) -> str | None:
        return self.app.state.failing  # type: ignore[no-any-return]

    @failing.setter
    def failing(self, value: str | None) -> None:
        self.app.state.failing = value

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dev-sms", daemon=True)
        self._thread.start()
        if not self._started.wait(30) or self._error:
            raise RuntimeError(f"dev SMS provider did not start: {self._error!r}")

    def _run(self) -> None:
        from services.notifications.dev_sms import DevSmsServer

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with DevSmsServer(self.app, "127.0.0.1", self.port):
                self._started.set()
                await self._stop.wait()

        try:
            asyncio.run(serve())
        except BaseException as exc:
            self._error = exc
            self._started.set()

    def stop(self) -> None:
        if self._loop and self._stop and self._thread:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(15)

    def records(self) -> list[dict[str, Any]]:
        from services.notifications.dev_sms import read_dev_sms

        return read_dev_sms(self.store)


# --- services --------------------------------------------------------------------------------


@dataclass
class ServiceProcess:
    """One copy of one service: `python -m ensemble.cli <name> --port P`."""

    name: str
    copy: int
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    source: Path = SOURCE  # the checkout it runs (another release's, in a rolling upgrade)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def label(self) -> str:
        return f"{self.name}-{self.copy}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.starts += 1
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n--- start {self.starts} of {self.label} on :{self.port}\n".encode())
            out.flush()
            # Provider callbacks (SMS status) come back to this copy's own address.
            env = {"ENSEMBLE_PUBLIC_BASE_URL": self.url, **self.env}
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ensemble.cli", self.name, "--port", str(self.port)],
                cwd=self.source, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )

    async def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                if not self.alive:
                    raise RuntimeError(f"{self.label} exited during start:\n{tail(self.log)}")
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"{self.url}/health/ready")
                    if response.status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.label} not ready in {timeout} s:\n{tail(self.log)}")
                await asyncio.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no graceful stop, no outbox flush, no acks: the crash we must survive."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=15)

    async def terminate(self, timeout: float = 40) -> int | None:
        """SIGTERM and wait for the graceful stop; SIGKILL if it does not come."""
        if not self.alive:
            return self.process.returncode if self.process else None
        assert self.process is not None
        self.process.terminate()
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus metric's samples on this process's /metrics (labels filter)."""
        async with httpx.AsyncClient(timeout=10) as client:
            text = (await client.get(f"{self.url}/metrics")).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line[len(name):len(name) + 1] not in ("{", " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


@dataclass
class ProcessSystem:
    """The whole system as separate processes; build with `process_system(...)`."""

    root: Path
    nats: Nats
    mail: MailSink
    sms: SmsSink
    services: dict[str, list[ServiceProcess]]
    database_urls: dict[str, str]
    schema_prefix: str | None
    district: str = "d001"
    _turn: Iterator[int] = field(default_factory=itertools.count)

    @property
    def processes(self) -> list[ServiceProcess]:
        return [p for copies in self.services.values() for p in copies]

    def urls(self, service: str) -> list[str]:
        """Base URLs of the live copies, rotated so callers spread their requests."""
        live = [p.url for p in self.services[service] if p.alive] or [
            p.url for p in self.services[service]
        ]
        shift = next(self._turn) % len(live)
        return live[shift:] + live[:shift]

    def process(self, service: str, copy: int = 0) -> ServiceProcess:
        return self.services[service][copy]

    async def kill(self, service: str, copy: int = 0) -> None:
        await asyncio.to_thread(self.process(service, copy).kill)

    async def restart(self, service: str, copy: int = 0) -> None:
        proc = self.process(service, copy)
        if proc.alive:
            await proc.terminate()
        proc.start()
        await proc.wait_ready()

    async def wait_ready(self) -> None:
        await asyncio.gather(*(p.wait_ready() for p in self.processes))

    def diagnosis(self) -> str:
        parts = [f"== {p.label} (alive={p.alive}) {p.log}\n{tail(p.log, 1500)}"
                 for p in self.processes]
        return "\n".join(parts)


def service_env(
    base: dict[str, str], name: str, nats_url: str, data_dir: Path, smtp_url: str, sms_url: str,
    database_url: str | None, schema_prefix: str | None, replicas: int, extra: dict[str, str],
) -> dict[str, str]:
    # Nothing of the caller's Ensemble or NATS configuration leaks into a test process.
    env = {k: v for k, v in base.items()
           if not k.startswith(("ENSEMBLE_", "NATS_", "SMTP_", "SMS_"))
           and not k.endswith("_DATABASE_URL")}
    env |= TEST_ENV | {
        "PYTHONUNBUFFERED": "1",
        "NATS_URL": nats_url,
        "ENSEMBLE_DATA_DIR": str(data_dir),
        "ENSEMBLE_DISTRICTS_FILE": str(DISTRICTS_FILE),
        "ENSEMBLE_STREAM_REPLICAS": str(replicas),
        "SMTP_URL": smtp_url,
        "SMS_API_URL": sms_url,
        "SMS_AUTH_TOKEN": SMS_AUTH_TOKEN,
        "ENSEMBLE_JWT_SECRET": JWT_SECRET,
    }
    if database_url:
        env[f"{name.upper()}_DATABASE_URL"] = database_url
    if schema_prefix:
        env["ENSEMBLE_DATABASE_SCHEMA_PREFIX"] = schema_prefix
    return env | extra


@contextlib.asynccontextmanager
async def system_ledger(system: ProcessSystem, district: str = "d001") -> AsyncIterator[Ledger]:
    """A ledger that drives ``system`` over HTTP as the district's admin and counts what lands
    at its SMTP and SMS sinks; its HTTP client is closed at the end."""
    from tests.support.ledger import Api, Ledger, Outreach

    api = Api(system.urls, admin_headers(district))
    ledger = Ledger(api, Outreach(system.mail.snapshot, system.sms.records), system.nats.url,
                    district)
    try:
        yield ledger
    finally:
        await ledger.close()
        await api.close()


def admin_headers(district: str = "d001", secret: str = JWT_SECRET) -> dict[str, str]:
    """A district admin's bearer token: the ledger acts for the whole district."""
    from runtime.auth import issue_token

    token = issue_token(secret, subject="ledger", role="district_admin", district=district)
    return {"Authorization": f"Bearer {token}"}


def postgres_url() -> str | None:
    return os.environ.get("ENSEMBLE_TEST_POSTGRES_URL") or None


async def drop_schemas(url: str, prefix: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        for service in ALL_SERVICES:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}_{service}" CASCADE')
    finally:
        await conn.close()


async def migrate(root: Path, database_url: str | None, prefix: str | None) -> None:
    """`ensemble migrate` from the source the services run, as compose and Kubernetes run it
    before the services start."""
    env = service_env(dict(os.environ), "referrals", "nats://127.0.0.1:9", root / "data", "",
                      "", None, prefix, 1, {})
    if database_url:
        env |= {f"{name.upper()}_DATABASE_URL": database_url for name in SERVICES}
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "ensemble.cli", "migrate", *SERVICES],
        cwd=SOURCE, env=env, capture_output=True, text=True, timeout=120, check=False)
    if out.returncode:
        raise RuntimeError(f"ensemble migrate failed:\n{out.stdout}\n{out.stderr}")


@contextlib.asynccontextmanager
async def process_system(
    root: Path,
    *,
    copies: int = 1,
    nats_nodes: int = 1,
    backend: str = "sqlite",
    extra_env: dict[str, str] | None = None,
    together: bool = False,
) -> AsyncIterator[ProcessSystem]:
    """Start NATS, the sinks and ``copies`` processes of each service; stop everything at the
    end (SIGTERM, then SIGKILL). ``backend`` is "sqlite" (files under root/data, shared by the
    copies of a service) or "postgres" (ENSEMBLE_TEST_POSTGRES_URL, a schema per service)."""
    # The SMTP and SMS sinks answer from threads of this process while its event loop drives
    # load: with the default 5 ms GIL switch interval every SMTP round trip waited for it.
    sys.setswitchinterval(0.0005)
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    database_url = prefix = None
    if backend == "postgres":
        database_url = postgres_url()
        if database_url is None:
            raise RuntimeError("postgres backend without ENSEMBLE_TEST_POSTGRES_URL")
        prefix = f"p{uuid.uuid4().hex[:10]}"
    nats = Nats(root / "nats", nats_nodes)
    mail = MailSink()
    sms = SmsSink(root / "sms" / "messages.jsonl")
    services: dict[str, list[ServiceProcess]] = {}
    try:
        await migrate(root, database_url, prefix)
        await nats.start()
        mail.start()
        sms.start()
        for name in SERVICES:
            env = service_env(dict(os.environ), name, nats.url, root / "data", mail.url, sms.url,
                              database_url, prefix, 3 if nats_nodes >= 3 else 1,
                              extra_env or {})
            services[name] = [
                ServiceProcess(name, i, env, root / "services" / f"{name}-{i}.log")
                for i in range(copies)
            ]
        system = ProcessSystem(root, nats, mail, sms, services,
                               {s: database_url for s in SERVICES if database_url}, prefix)
        # One process first (it creates the streams: several creating R3 streams at once on a
        # fresh cluster time out, see the report), then copy 0 of the others, then the other
        # copies.
        first, *rest = system.processes
        waves = [system.processes] if together else [
            [first], [p for p in rest if p.copy == 0], [p for p in rest if p.copy > 0]]
        for wave in filter(None, waves):
            for proc in wave:
                proc.start()
            await asyncio.gather(*(p.wait_ready() for p in wave))
        yield system
    finally:
        procs = [p for copies_ in services.values() for p in copies_]
        await asyncio.gather(*(p.terminate(20) for p in procs), return_exceptions=True)
        sms.stop()
        mail.stop()
        nats.stop()
        if database_url and prefix:
            await drop_schemas(database_url, prefix)
