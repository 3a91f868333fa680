"""The SMTP provider keeps its connections open between batches (a batch of one message would
otherwise pay for connect, EHLO and QUIT), and opens one again when the server dropped it. A
message the server refuses fails alone: the connection is reset before the next family's
message, and a refusal of one address is never confused with the server's own trouble."""

from collections.abc import AsyncIterator
from email import message_from_bytes
from email.policy import default
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from ensemble.embedded import free_port
from services.notifications.errors import PermanentSendError, TransientSendError
from services.notifications.providers import Outgoing, SmtpEmail


class Peers:
    """Which client connection (its address) delivered each message."""

    def __init__(self) -> None:
        self.peers: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.peers.append(session.peer)
        return "250 OK"


def message(n: int) -> Outgoing:
    return Outgoing(f"family{n}@example.org", "Hello", "text", None, f"key-{n}")


async def test_batches_share_a_connection_and_a_dropped_one_is_opened_again() -> None:
    port = free_port()
    handler = Peers()
    server = Controller(handler, hostname="127.0.0.1", port=port)
    server.start()
    provider = SmtpEmail(f"smtp://127.0.0.1:{port}", "Ensemble <noreply@ensemble.local>",
                         connections=1)
    try:
        for n in range(3):  # three batches of one
            assert await provider.send(message(n)) == f"<key-{n}@ensemble.local>"
        assert len(handler.peers) == 3 and len(set(handler.peers)) == 1

        server.stop()  # the relay restarts: the kept connection is dead
        server = Controller(handler, hostname="127.0.0.1", port=port)
        server.start()
        assert await provider.send(message(3)) == "<key-3@ensemble.local>"
        assert len(handler.peers) == 4 and handler.peers[3] != handler.peers[0]
    finally:
        await provider.aclose()
        server.stop()
    assert not provider._idle  # closed with the service


class Relay:
    """A relay that refuses what a test tells it to, and keeps what it accepts."""

    def __init__(self) -> None:
        self.refuse_rcpt: dict[str, int] = {}  # address -> SMTP code
        self.refuse_sender: int | None = None
        self.delivered: list[tuple[Any, list[str], list[str], bytes]] = []

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        if self.refuse_sender:
            return f"{self.refuse_sender} sender refused for the test"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse_rcpt:
            return f"{self.refuse_rcpt[address]} mailbox refused for the test"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.delivered.append((session.peer, list(envelope.rcpt_tos),
                               list(envelope.mail_options), envelope.content))
        return "250 OK"

    def peer(self, address: str) -> Any:
        [peer] = [p for p, rcpt, _, _ in self.delivered if rcpt == [address]]
        return peer


async def _relay(smtputf8: bool) -> AsyncIterator[tuple[Relay, SmtpEmail]]:
    relay = Relay()
    port = free_port()
    server = Controller(relay, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
    server.start()
    # One connection: every message of a test travels on the same one unless it is closed.
    provider = SmtpEmail(f"smtp://127.0.0.1:{port}", "Ensemble <noreply@ensemble.local>",
                         connections=1)
    try:
        yield relay, provider
    finally:
        await provider.aclose()
        server.stop()


@pytest.fixture
async def ascii_relay() -> AsyncIterator[tuple[Relay, SmtpEmail]]:
    async for pair in _relay(smtputf8=False):
        yield pair


@pytest.fixture
async def utf8_relay() -> AsyncIterator[tuple[Relay, SmtpEmail]]:
    async for pair in _relay(smtputf8=True):
        yield pair


def to(address: str, key: str) -> Outgoing:
    return Outgoing(address, "Hola", "texto", None, key)


async def test_a_non_ascii_address_fails_alone_where_the_server_has_no_smtputf8(
        ascii_relay: tuple[Relay, SmtpEmail]) -> None:
    relay, provider = ascii_relay
    await provider.send(to("ana@example.org", "k-1"))
    with pytest.raises(PermanentSendError) as refused:
        await provider.send(to("josé@ejemplo.es", "k-2"))
    assert "SMTPUTF8" in refused.value.reason and "josé" not in refused.value.reason
    # The next family's message, on the same kept connection, and in one batch with it too.
    assert await provider.send(to("luis@example.org", "k-3")) == "<k-3@ensemble.local>"
    results = await provider.send_many([to("josé@ejemplo.es", "k-4"),
                                        to("mai@example.org", "k-5")])
    assert isinstance(results[0], PermanentSendError) and results[1] == "<k-5@ensemble.local>"
    assert relay.peer("luis@example.org") == relay.peer("ana@example.org") \
        == relay.peer("mai@example.org")


async def test_an_internationalized_domain_travels_as_ascii_without_smtputf8(
        ascii_relay: tuple[Relay, SmtpEmail]) -> None:
    relay, provider = ascii_relay
    assert await provider.send(to("ana@ejémplo.es", "k-1")) == "<k-1@ensemble.local>"
    [(_, rcpt, options, content)] = relay.delivered
    assert rcpt == ["ana@xn--ejmplo-cva.es"] and "SMTPUTF8" not in options
    assert message_from_bytes(content, policy=default)["To"] == "ana@xn--ejmplo-cva.es"


async def test_a_non_ascii_address_is_sent_with_smtputf8_when_the_server_offers_it(
        utf8_relay: tuple[Relay, SmtpEmail]) -> None:
    relay, provider = utf8_relay
    assert await provider.send(to("josé@ejemplo.es", "k-1")) == "<k-1@ensemble.local>"
    assert await provider.send(to("ana@example.org", "k-2")) == "<k-2@ensemble.local>"
    (_, rcpt, options, content), (_, ascii_rcpt, ascii_options, _) = relay.delivered
    assert rcpt == ["josé@ejemplo.es"] and "SMTPUTF8" in options
    # RFC 6532: the address as UTF-8 in the header, not an encoded-word a reader cannot reply to
    assert "To: josé@ejemplo.es\r\n".encode() in content
    assert message_from_bytes(content, policy=default)["To"] == "josé@ejemplo.es"
    assert ascii_rcpt == ["ana@example.org"] and "SMTPUTF8" not in ascii_options


async def test_a_refused_recipient_fails_alone_and_a_busy_mailbox_is_tried_again(
        ascii_relay: tuple[Relay, SmtpEmail]) -> None:
    relay, provider = ascii_relay
    relay.refuse_rcpt = {"gone@example.org": 550, "busy@example.org": 450}
    results = await provider.send_many([
        to("ana@example.org", "k-1"), to("gone@example.org", "k-2"),
        to("busy@example.org", "k-3"), to("luis@example.org", "k-4")])
    assert results[0] == "<k-1@ensemble.local>" and results[3] == "<k-4@ensemble.local>"
    # 4xx: the mailbox is full or greylisting, not gone: not a reason to give up on the family
    assert isinstance(results[2], TransientSendError) and "450" in results[2].reason
    assert isinstance(results[1], PermanentSendError) and "550" in results[1].reason
    assert relay.peer("luis@example.org") == relay.peer("ana@example.org")


async def test_a_refused_sender_is_the_relay_s_trouble_not_the_family_s(
        ascii_relay: tuple[Relay, SmtpEmail]) -> None:
    relay, provider = ascii_relay
    relay.refuse_sender = 550  # e.g. the relay no longer lets us send as our address
    results = await provider.send_many([to("ana@example.org", "k-1")])
    assert isinstance(results[0], TransientSendError)  # retried, never the family unreachable
    relay.refuse_sender = None
    assert await provider.send(to("ana@example.org", "k-2")) == "<k-2@ensemble.local>"
