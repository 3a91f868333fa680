"""The SMTP provider keeps its connections open between batches (a batch of one message would
otherwise pay for connect, EHLO and QUIT), and opens one again when the server dropped it."""

from typing import Any

from aiosmtpd.controller import Controller

from ensemble.embedded import free_port
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
