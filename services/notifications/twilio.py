"""Twilio Programmable Messaging: webhook signatures and an async client for sending SMS.

Signature (X-Twilio-Signature): take the full URL Twilio requested (with its query string),
append every POST parameter sorted by name as name+value with no separators, HMAC-SHA1 that with
the auth token as key, base64-encode. Validation also accepts the URL with the port removed or
the scheme's default port added, as Twilio's own helper libraries do, because proxies rewrite it.
"""

import base64
import contextlib
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, Self
from urllib.parse import quote_plus, urlsplit, urlunsplit

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from services.notifications.errors import PermanentSendError, TransientSendError

SIGNATURE_HEADER = "X-Twilio-Signature"
# Twilio puts this on its webhooks (same value on retries). We send it on creates too so a
# retried send is recognisable; the dev provider de-duplicates on it.
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"

Params = Mapping[str, str] | Iterable[tuple[str, str]]

_DEFAULT_PORTS = {"https": 443, "http": 80}
_FORM = "application/x-www-form-urlencoded"


@lru_cache(maxsize=256)  # an announcement's text is the same for a whole language
def _quoted(text: str) -> str:
    return quote_plus(text)

# Fixed, data-free descriptions of common errors (the provider's message may quote the number).
TWILIO_UNSUBSCRIBED = 21610  # the handset sent STOP: Twilio refuses to send to it
KNOWN_ERRORS: dict[int, str] = {
    20003: "authentication failed",
    20429: "too many requests",
    21211: "invalid 'To' phone number",
    21408: "sending to this region is not enabled",
    21602: "message body is required",
    21606: "'From' number cannot send SMS",
    21610: "recipient has unsubscribed (replied STOP)",
    21612: "no route to the 'To' number",
    21614: "'To' number is not a mobile number",
    21617: "message body is too long",
}


def _pairs(params: Params) -> list[tuple[str, str]]:
    if hasattr(params, "multi_items"):  # Starlette FormData keeps repeated keys here
        return [(str(k), str(v)) for k, v in params.multi_items()]
    items = params.items() if isinstance(params, Mapping) else params
    return [(str(k), str(v)) for k, v in items]


def compute_signature(auth_token: str, url: str, params: Params) -> str:
    payload = url + "".join(k + v for k, v in sorted(_pairs(params)))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    match = re.fullmatch(r"(.*):(\d+)", hostport)
    variants = [url]
    if match:
        variants.append(urlunsplit(parts._replace(netloc=userinfo + at + match[1])))
    elif parts.scheme in _DEFAULT_PORTS and hostport:
        netloc = f"{userinfo}{at}{hostport}:{_DEFAULT_PORTS[parts.scheme]}"
        variants.append(urlunsplit(parts._replace(netloc=netloc)))
    return variants


def validate_signature(auth_token: str, url: str, params: Params, signature: str | None) -> bool:
    if not signature or not auth_token:
        return False
    pairs = _pairs(params)
    given = signature.encode()
    results = [
        hmac.compare_digest(compute_signature(auth_token, candidate, pairs).encode(), given)
        for candidate in _url_variants(url)
    ]
    return any(results)


def _error_code(body: bytes) -> int | None:
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers["Retry-After"])
    except (KeyError, ValueError):
        return None


class TwilioSmsClient:
    """Sends one SMS per call through the Messages API; raises Transient/PermanentSendError.

    aiohttp rather than httpx: with the dispatcher's window of 50 requests in flight, httpx's
    pool looks at every open connection for every request (half the CPU of a fan-out)."""

    def __init__(
        self,
        base_url: str,
        account_sid: str,
        auth_token: str,
        from_number: str,
        status_callback_url: str | None = None,
        *,
        timeout: float = 10.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.account_sid = account_sid
        self.from_number = from_number
        self.status_callback_url = status_callback_url
        basic = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {basic}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self._session: aiohttp.ClientSession | None = None  # made in the running loop
        self._proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None
        self._fixed = f"From={quote_plus(from_number)}"
        self._callback = (f"&StatusCallback={quote_plus(status_callback_url)}"
                          if status_callback_url else "")

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def __repr__(self) -> str:  # keep the token out of logs and tracebacks
        return f"TwilioSmsClient(base_url={self.base_url!r}, account_sid={self.account_sid!r})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # The proxy from the environment (HTTPS_PROXY: districts reach Twilio through one),
            # found once: with trust_env aiohttp looks for it and for a netrc entry in a thread
            # for every request, two thread hops per SMS (our own Authorization header is sent
            # anyway).
            with contextlib.suppress(LookupError):
                self._proxy, self._proxy_auth = get_env_proxy_for_url(URL(self.messages_url))
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers=self._headers,
                connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300))
        return self._session

    def form(self, to: str, body: str) -> bytes:
        """The request's form, urlencoded as aiohttp would (same fields, same order); the
        parts every message shares are encoded once, a batch's shared text once per batch."""
        return f"To={quote_plus(to)}&{self._fixed}&Body={_quoted(body)}{self._callback}".encode()

    async def send(self, to: str, body: str, idempotency_key: str) -> str:
        try:
            async with self._client().post(
                self.messages_url,
                data=self.form(to, body),
                headers={IDEMPOTENCY_HEADER: idempotency_key, "Content-Type": _FORM},
                proxy=self._proxy, proxy_auth=self._proxy_auth,
            ) as response:
                content = await response.read()
                status, headers = response.status, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            # includes timeouts and dropped connections: the send may or may not exist
            raise TransientSendError(f"network error: {type(exc).__name__}") from exc
        return self._message_sid(status, headers, content)

    def _message_sid(self, status: int, headers: Mapping[str, str], content: bytes) -> str:
        code = _error_code(content)
        described = KNOWN_ERRORS.get(code, "request rejected") if code else "request rejected"
        if status == 429 or status >= 500:
            raise TransientSendError(
                f"twilio HTTP {status}" + (f" error {code}" if code else ""),
                code=code,
                status=status,
                retry_after=_retry_after(headers),
            )
        if status >= 400:
            label = f"twilio error {code}" if code else f"twilio HTTP {status}"
            raise PermanentSendError(f"{label}: {described}", code=code, status=status)
        try:
            sid = json.loads(content)["sid"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientSendError(f"twilio HTTP {status} without a message sid") from exc
        return str(sid)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
