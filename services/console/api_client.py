"""The one place the console calls the other services: their public HTTP APIs under /api/v1,
with the signed-in person's own bearer token. What a person may see and do is what the APIs
answer to that token; the console keeps no second copy of the tenancy rules."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from runtime import tracing


class ApiError(Exception):
    """An API's refusal, kept as it answered: the status and its `detail`."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail

    @property
    def fields(self) -> dict[str, str]:
        """A 422's messages by field name (the last part of each `loc`), for the form."""
        if self.status != 422 or not isinstance(self.detail, list):
            return {}
        found: dict[str, str] = {}
        for error in self.detail:
            loc = [str(part) for part in error.get("loc", []) if part not in ("body", "query")]
            name = loc[0] if loc else "form"
            found.setdefault(name, str(error.get("msg", "invalid")))
        return found

    @property
    def message(self) -> str:
        if isinstance(self.detail, str):
            return self.detail
        if self.fields:
            return "; ".join(f"{k}: {v}" for k, v in self.fields.items())
        return f"the service answered {self.status}"


# Which service answers a path: one address for all of them by default (`ensemble up`, an
# ingress), or one each (ENSEMBLE_CONSOLE_SERVICE_URLS).
SERVICE_OF_PATH = (("/referrals", "referrals"), ("/partners", "partners"),
                   ("/partner-links", "partners"),
                   ("/families", "engagement"), ("/family-events", "engagement"),
                   ("/announcements", "engagement"), ("/messages", "notifications"),
                   ("/message-batches", "notifications"), ("/webhooks", "webhooks"),
                   ("/insights", "insights"))


def service_of(path: str) -> str:
    return next((name for prefix, name in SERVICE_OF_PATH if path.startswith(prefix)), "")


@dataclass
class Answer:
    status: int
    body: Any
    headers: httpx.Headers


class Api:
    def __init__(self, http: httpx.AsyncClient, token: str,
                 base_url_of: Callable[[str], str]) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}
        self.base_url_of = base_url_of

    async def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                   json: Any = None, content: bytes | None = None,
                   extra: dict[str, str] | None = None) -> Answer:
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            url = f"{self.base_url_of(service_of(path))}/api/v1{path}"
            # The page's trace goes on in the service (W3C traceparent, when tracing is on).
            headers = {**self.headers, **tracing.current_fields(), **(extra or {})}
            response = await self.http.request(method, url, params=clean, json=json,
                                               content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise ApiError(503, f"the service did not answer ({type(exc).__name__})") from exc
        kind = response.headers.get("content-type", "")
        body: Any = response.json() if kind.startswith("application/json") else response.text
        if response.status_code >= 400:
            detail = body.get("detail", body) if isinstance(body, dict) else body
            raise ApiError(response.status_code, detail)
        return Answer(response.status_code, body, response.headers)

    async def download(self, path: str, **params: Any) -> httpx.Response:
        """A file an API answers (a PDF, a CSV) as it came: bytes and headers."""
        clean = {k: v for k, v in params.items() if v not in (None, "")}
        try:
            response = await self.http.get(f"{self.base_url_of(service_of(path))}/api/v1{path}",
                                           params=clean, headers=self.headers)
        except httpx.HTTPError as exc:
            raise ApiError(503, f"the service did not answer ({type(exc).__name__})") from exc
        if response.status_code >= 400:
            kind = response.headers.get("content-type", "")
            body = response.json() if kind.startswith("application/json") else response.text
            raise ApiError(response.status_code,
                           body.get("detail", body) if isinstance(body, dict) else body)
        return response

    async def get(self, path: str, **params: Any) -> Any:
        return (await self.call("GET", path, params=params)).body

    async def post(self, path: str, json: Any, *, once: str | None = None,
                   **params: Any) -> Answer:
        """``once``: the form's key, sent as Idempotency-Key so a resent form creates once."""
        extra = {"Idempotency-Key": once} if once else None
        return await self.call("POST", path, params=params, json=json, extra=extra)

    async def patch(self, path: str, json: Any) -> Answer:
        return await self.call("PATCH", path, json=json)

    async def put(self, path: str, json: Any) -> Answer:
        return await self.call("PUT", path, json=json)
