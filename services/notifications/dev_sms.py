"""Local stand-in for Twilio's Messages API, for development and fault tests.

Speaks the same shape as ``POST /2010-04-01/Accounts/{sid}/Messages.json`` (form body, basic
auth, JSON reply), keeps every accepted message as one JSON line in a file a person can read,
de-duplicates on the ``I-Twilio-Idempotency-Token`` header, signs the status callbacks and inbound
webhooks it sends exactly as Twilio does, and can be told to fail
(``app.state.failing = "transient" | "permanent" | None``).
"""

import asyncio
import base64
import contextlib
import json
import logging
import re
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import httpx
import uvicorn
from fastapi import APIRouter, BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse

from services.notifications.sms_segments import count_segments
from services.notifications.twilio import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, compute_signature

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEV_ACCOUNT_SID = "AC" + "0" * 32
DEV_SERVICE_NUMBER = "+15005550006"  # Twilio's "valid test number"
_E164 = re.compile(r"\+[1-9]\d{6,14}")


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _error(status: int, code: int, message: str) -> JSONResponse:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status)


def read_dev_sms(store_path: Path) -> list[dict[str, Any]]:
    """Every message the dev provider accepted, oldest first."""
    if not store_path.exists():
        return []
    with store_path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _append(store_path: Path, record: dict[str, Any]) -> None:
    store_path.parent.mkdir(parents=True, exist_ok=True)
    with store_path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _basic_auth(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except ValueError:
        return None
    return user, password


async def _post_signed(client: httpx.AsyncClient, url: str, params: dict[str, str],
                       auth_token: str, token: str) -> int:
    headers = {
        SIGNATURE_HEADER: compute_signature(auth_token, url, params),
        IDEMPOTENCY_HEADER: token,
    }
    response = await client.post(url, data=params, headers=headers)
    return response.status_code


async def _status_callback(client: httpx.AsyncClient, url: str, record: dict[str, Any],
                           auth_token: str) -> None:
    params = {
        "AccountSid": record["account_sid"],
        "ApiVersion": API_VERSION,
        "From": record["from"],
        "To": record["to"],
        "MessageSid": record["sid"],
        "SmsSid": record["sid"],
        "MessageStatus": "delivered",
        "SmsStatus": "delivered",
    }
    try:
        await _post_signed(client, url, params, auth_token, _sid("callback-"))
    except httpx.HTTPError as exc:  # Twilio does not retry status callbacks by default either
        log.warning("dev sms: status callback failed: %s", type(exc).__name__)


@dataclass
class _Provider:
    """What the routes share: the store, the accounts' secrets and the one HTTP client for
    every callback (a new one per message costs an SSL context each time)."""

    store_path: Path
    auth_token: str
    account_sid: str
    service_number: str
    client: httpx.AsyncClient
    lock: asyncio.Lock
    by_token: dict[str, dict[str, Any]]  # accepted messages by idempotency token


router = APIRouter()


def create_dev_sms_app(
    store_path: Path,
    auth_token: str,
    webhook_url: str | None = None,
    *,
    account_sid: str = DEV_ACCOUNT_SID,
    service_number: str = DEV_SERVICE_NUMBER,
) -> FastAPI:
    """``app.state.failing`` and ``app.state.webhook_url`` may be changed while it runs."""
    client = httpx.AsyncClient(timeout=10.0)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(title="Ensemble dev SMS provider", docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.failing = None
    app.state.webhook_url = webhook_url
    app.state.provider = _Provider(
        store_path, auth_token, account_sid, service_number, client, asyncio.Lock(),
        {r["idempotency_token"]: r for r in read_dev_sms(store_path)
         if r.get("idempotency_token")})
    app.include_router(router)
    return app


@router.post(f"/{API_VERSION}/Accounts/{{sid}}/Messages.json")
async def create_message(sid: str, request: Request, background: BackgroundTasks
                         ) -> JSONResponse:
    dev: _Provider = request.app.state.provider
    if _basic_auth(request) != (sid, dev.auth_token):
        return _error(401, 20003, "Authenticate")
    form = await _form_or_refusal(request)
    if isinstance(form, JSONResponse):
        return form
    to, sender, body = form
    token = request.headers.get(IDEMPOTENCY_HEADER)
    callback = str((await request.form()).get("StatusCallback") or "")
    async with dev.lock:
        record = dev.by_token.get(token) if token else None
        if record is None:
            length = count_segments(body)
            record = {
                "sid": _sid("SM"),
                "account_sid": sid,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "from": sender,
                "to": to,
                "body": body,
                "num_segments": length.segments,
                "encoding": length.encoding,
                "idempotency_token": token,
                "status_callback": callback or None,
            }
            _append(dev.store_path, record)  # one short local append: not worth a thread
            if token:
                dev.by_token[token] = record
            if callback:
                background.add_task(_status_callback, dev.client, callback, record,
                                    dev.auth_token)
    return JSONResponse(_reply(sid, record), status_code=201)


async def _form_or_refusal(request: Request) -> tuple[str, str, str] | JSONResponse:
    """(To, From, Body) of a message the provider takes, or its error as Twilio answers it
    (a simulated outage or refusal first, when ``app.state.failing`` says so)."""
    failing = request.app.state.failing
    if failing == "transient":
        return _error(503, 20503, "Service unavailable (simulated outage)")
    if failing == "permanent":
        return _error(400, 21211, "Invalid 'To' Phone Number (simulated)")
    form = await request.form()
    to, sender, body = (str(form.get(k, "")) for k in ("To", "From", "Body"))
    if not to:
        return _error(400, 21604, "A 'To' phone number is required.")
    if not _E164.fullmatch(to):
        return _error(400, 21211, "Invalid 'To' Phone Number")
    if not sender:
        return _error(400, 21603, "A 'From' phone number is required.")
    if not body:
        return _error(400, 21602, "Message body is required.")
    return to, sender, body


def _reply(sid: str, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "sid": record["sid"],
        "account_sid": record["account_sid"],
        "from": record["from"],
        "to": record["to"],
        "body": record["body"],
        "status": "queued",
        "direction": "outbound-api",
        "num_segments": str(record["num_segments"]),
        "date_created": record["date"],
        "api_version": API_VERSION,
        "error_code": None,
        "error_message": None,
        "uri": f"/{API_VERSION}/Accounts/{sid}/Messages/{record['sid']}.json",
    }


@router.post("/_dev/inbound")
async def simulate_reply(request: Request) -> JSONResponse:
    """A family's reply: form or JSON with From, Body (To optional)."""
    dev: _Provider = request.app.state.provider
    if request.headers.get("content-type", "").startswith("application/json"):
        raw = await request.json()
        if not isinstance(raw, dict):
            return JSONResponse({"detail": "expected a JSON object"}, status_code=400)
        data = {str(k): str(v) for k, v in raw.items()}
    else:
        data = {k: str(v) for k, v in (await request.form()).items()}
    url = request.app.state.webhook_url
    if not url:
        return JSONResponse({"detail": "no webhook_url configured"}, status_code=409)
    body = data.get("Body", "")
    message_sid = _sid("SM")
    params = {
        "AccountSid": dev.account_sid,
        "ApiVersion": API_VERSION,
        "MessageSid": message_sid,
        "SmsMessageSid": message_sid,
        "SmsSid": message_sid,
        "SmsStatus": "received",
        "From": data.get("From", ""),
        "To": data.get("To") or dev.service_number,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": str(max(count_segments(body).segments, 1)),
    }
    try:
        status = await _post_signed(dev.client, url, params, dev.auth_token, _sid("inbound-"))
    except httpx.HTTPError as exc:
        return JSONResponse(
            {"sid": message_sid, "forwarded": False, "error": type(exc).__name__},
            status_code=502,
        )
    return JSONResponse({"sid": message_sid, "forwarded": True, "webhook_status": status})


@router.get("/_dev/messages")
async def list_messages(request: Request) -> list[dict[str, Any]]:
    return await asyncio.to_thread(read_dev_sms, request.app.state.provider.store_path)


class _EmbeddedServer(uvicorn.Server):
    """Leaves signal handling to the program that embeds it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class DevSmsServer:
    """Runs an ASGI app (the dev provider, or any other) under uvicorn in the current event
    loop; port 0 picks a free port, see ``base_url``."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        # log_config=None: leave the embedding program's logging configuration alone.
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self.app = app
        self.host = host
        self._address = (host, port)
        self._server = _EmbeddedServer(config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self._socket is not None, "not started"
        return int(self._socket.getsockname()[1])

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        # Bind here: a busy port raises OSError to the caller instead of uvicorn's sys.exit.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._socket = socket.create_server(self._address, family=family)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        try:
            while not self._server.started:
                if self._task.done():
                    await self._task
                    raise RuntimeError("server stopped during startup")
                await asyncio.sleep(0.01)
        except BaseException:  # failed or cancelled while starting: do not leave it serving
            with contextlib.suppress(Exception):
                await asyncio.shield(self.stop())
            raise

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._server.should_exit = True
        try:
            await task
        finally:
            if self._socket is not None:
                self._socket.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


async def run_dev_sms_server(
    host: str,
    port: int,
    store_path: Path,
    auth_token: str,
    webhook_url: str | None = None,
    **app_options: Any,
) -> None:
    """Serve until cancelled, e.g. as one task of ``ensemble up``."""
    server = DevSmsServer(
        create_dev_sms_app(store_path, auth_token, webhook_url, **app_options), host, port
    )
    try:
        await server.start()
        await asyncio.Event().wait()
    finally:
        await asyncio.shield(server.stop())
