"""HTTP hosting: one FastAPI app for one service (a real deployment) or all of them (`ensemble
up`), with /metrics, /health/live, /health/ready, and errors that are answers, not crashes. A
web part (the console) can be mounted at `/` beside them: it has its own session instead of the
bearer-token door, and no database or consumers."""

import asyncio
import contextlib
import json
import math
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.asyncapi import asyncapi_route
from runtime import tracing
from runtime.auth import Policy, TokenVerifier, authorizer
from runtime.errors import DomainError
from runtime.keys import PublicKeys
from runtime.metrics import HTTP_REQUESTS, HTTP_SECONDS
from runtime.service import ServiceRuntime
from runtime.settings import Settings

MAX_BODY_BYTES = 1_000_000


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": {"type": "object", "required": ["detail"],
                                            "properties": {"detail": schema}}}}


# What any route of a service may answer besides its own success (the door, the domain, the
# body's size and shape): documented, so clients know an error is always JSON with a `detail`
# (on the HTML pages too), and a 422 names the fields.
_FIELD_ERRORS = {"type": "array", "items": {"type": "object", "required": ["loc", "msg", "type"]}}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": what, "content": _json(_FIELD_ERRORS if code == 422 else
                                                 {"type": "string"})}
    for code, what in ((400, "body not readable"), (401, "no valid bearer token"),
                       (403, "not the caller's to see or do"), (404, "not found"),
                       (409, "breaks a domain rule"), (413, "body too large"),
                       (422, "invalid fields, each named"))
}


@dataclass
class Service:
    runtime: ServiceRuntime
    router: APIRouter
    policy: Policy = field(default_factory=Policy)
    # Run on every route after the policy (e.g. the referrals audit trail).
    dependencies: list[Any] = field(default_factory=list)
    # What the service's module-level routes need (its runtime, clock, providers...): they
    # receive it through ``Depends(wired(name))``.
    deps: Any = None

    @property
    def name(self) -> str:
        return self.runtime.name


def wired(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A FastAPI dependency: what service ``name`` was built with (``Service.deps``), found on
    the app serving the request, so routes can be declared at module level. A coroutine:
    FastAPI runs a plain-function dependency in its thread pool, a thread hop per request
    that costs more than the lookup."""

    async def deps(request: Request) -> Any:
        return request.app.state.deps[name]

    deps.__name__ = f"{name}_deps"
    return deps


@dataclass
class Web:
    """Pages served at `/` (not under /api/v1, not behind the bearer-token door: the part
    authenticates people with its own session)."""

    name: str
    router: APIRouter
    # Opened with the app and closed after it (e.g. the HTTP client the pages call APIs with).
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None
    static: tuple[str, str] | None = None  # (URL path, folder) of the part's own files
    # The part's own exceptions (a session that ended, a refused form) answered as pages.
    exception_handlers: dict[type[Exception], Callable[..., Awaitable[Response]]] = field(
        default_factory=dict)


def _verifier(settings: Settings, made: dict[tuple[str | None, str], TokenVerifier]
              ) -> TokenVerifier:
    """The token check for a service's settings: the console's published keys when a JWKS is
    set (one cache for the services of one process), else the development HS256 secret."""
    key = (settings.jwks_url, settings.jwt_secret)
    if key not in made:
        made[key] = (TokenVerifier(jwks=PublicKeys(settings.jwks_url,
                                                   max_age=settings.jwks_cache_seconds))
                     if settings.jwks_url else TokenVerifier(secret=settings.jwt_secret))
    return made[key]


def create_app(services: list[Service], title: str = "Ensemble",
               web: Web | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started: list[Service] = []
        try:
            for service in services:
                await service.runtime.start()
                started.append(service)
            if web and web.lifespan:
                async with web.lifespan(app):
                    yield
            else:
                yield
        finally:
            for service in reversed(started):
                await service.runtime.stop()

    app = FastAPI(
        title=title,
        version="1.0",
        lifespan=lifespan,
        description="Community school coordination: referrals, partners, family outreach.",
    )
    app.state.services = {s.name: s for s in services}
    app.state.deps = {s.name: s.deps for s in services}
    verifiers: dict[tuple[str | None, str], TokenVerifier] = {}
    for service in services:
        # Every route of a service is behind its policy; the principal's scope then limits
        # every query of the request in the data layer (runtime.tenancy).
        authorize = authorizer(_verifier(service.runtime.settings, verifiers), service.policy)
        app.include_router(service.router, prefix=API_PREFIX, tags=[service.name],
                           responses=ERRORS,
                           dependencies=[Depends(authorize), *service.dependencies])

    if web:
        from fastapi.staticfiles import StaticFiles

        app.include_router(web.router, tags=[web.name], include_in_schema=False)
        if web.static:
            app.mount(web.static[0], StaticFiles(directory=web.static[1]), name="static")
        for kind, handler in web.exception_handlers.items():
            app.add_exception_handler(kind, handler)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # The event contract for integrators (AsyncAPI 3, generated from contracts/).
    app.get("/asyncapi.json", tags=["contract"])(asyncapi_route)

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/ready", tags=["health"])
    async def ready() -> JSONResponse:
        checks = {s.name: await s.runtime.readiness() for s in services}
        ok = all(all(c.values()) for c in checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.exception_handler(ValidationError)
    async def invalid(_request: Request, exc: ValidationError) -> JSONResponse:
        # Bodies a route validates itself (webhooks, uploads): the same 422 FastAPI gives.
        errors = [{"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
                  for err in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code,
                            headers=exc.headers)

    app.add_middleware(GuardAndMeasure)
    return app


TOO_LARGE = f"body over {MAX_BODY_BYTES} bytes"


def _is_json(content_type: str | None) -> bool:
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and
                                          kind.endswith("+json"))


def _non_finite(value: Any, loc: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where a JSON document holds NaN, Infinity or a number too large for a float (1e999)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else loc
    items = (value.items() if isinstance(value, dict) else
             enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        found = _non_finite(item, (*loc, key))
        if found is not None:
            return found
    return None


def json_body_error(body: bytes) -> JSONResponse | None:
    """The answer to a JSON body no route should see: 400 when it is not JSON at all (as the
    OpenAPI documents), 422 naming the field for a number JSON does not have. Python's json
    reads NaN and Infinity and turns 1e999 into inf; pydantic would take them as floats (or
    fail to report them: its error repeats the input, which no JSON answer can carry)."""
    if not body.strip():
        return None  # no body: the route's validation names what is missing
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge integers
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        where = (f" at line {exc.lineno} column {exc.colno}"
                 if isinstance(exc, json.JSONDecodeError) else "")
        return JSONResponse({"detail": f"body is not valid JSON: {why}{where}"}, 400)
    loc = _non_finite(document)
    if loc is None:
        return None
    return JSONResponse({"detail": [{"loc": ["body", *loc], "type": "finite_number",
                                     "msg": "a JSON number must be finite (no NaN, Infinity or "
                                            "a value beyond the float range)"}]}, 422)


async def _refuse_too_large(scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"detail": TOO_LARGE}, status_code=413)(scope, receive, send)


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it on as a 413, not a 400."""

    def __init__(self) -> None:
        super().__init__(413, TOO_LARGE)


API_PREFIX = "/api/v1"


def _untraced(path: str) -> bool:
    """Scrapes and probes: no trace each (they come every few seconds and lead nowhere)."""
    return path == "/metrics" or path.startswith("/health/")


class GuardAndMeasure:
    """Refuses bodies over the limit and JSON bodies no route should see (json_body_error), and
    counts and times every request by route template.

    Plain ASGI: ``@app.middleware("http")`` (BaseHTTPMiddleware) runs each request in an extra
    task with a memory stream, which cost about a tenth of a service's event loop under load.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.enabled() or _untraced(scope["path"]):
            await self._serve(scope, receive, send)
            return
        # A server span continuing the caller's W3C traceparent/tracestate, if it sent one;
        # named by the route template once routed (never the path's ids or the query).
        with tracing.span(f"{scope['method']}", parent=tracing.context_from(Headers(scope=scope)),
                          kind=SpanKind.SERVER,
                          attributes={"http.request.method": scope["method"]}):
            await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            await _refuse_too_large(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before it answers, the server answers 500
        answered = False
        received = 0

        async def receive_limited() -> Message:
            # A chunked body names no length: count it as it comes.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise BodyTooLarge
            return message

        async def send_and_note(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
            await send(message)

        try:
            app_receive = receive_limited
            if _is_json(Headers(scope=scope).get("content-type")):
                # Read whole (it is at most MAX_BODY_BYTES), checked once here for every route,
                # then handed to the app as it came.
                body, more = b"", True
                while more:
                    message = await receive_limited()
                    if message["type"] != "http.request":
                        break
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                refused = json_body_error(body)
                if refused is not None:
                    await refused(scope, receive, send_and_note)
                    return
                app_receive = _replay(body, receive_limited)
            await self.app(scope, app_receive, send_and_note)
        except BodyTooLarge:
            if answered:
                raise
            status = 413
            await _refuse_too_large(scope, receive, send)
        finally:
            service, path = _route_label(scope)
            method = scope["method"]
            HTTP_REQUESTS.labels(service, path, method, str(status)).inc()
            HTTP_SECONDS.labels(service, path, method).observe(time.perf_counter() - started)
            tracing.name_request(service, path, method, status)


def _route_label(scope: Scope) -> tuple[str, str]:
    """The service and the route template a request matched, never ids from the URL. FastAPI
    puts the matched route of the service's own router in the scope (without the /api/v1
    prefix, and without the tag include_router gave it): the service is the package of the
    route's endpoint (services/<name>/), the prefix the one the request came through."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "ensemble", "unmatched"
    module = getattr(getattr(route, "endpoint", None), "__module__", "") or ""
    parts = module.split(".")
    service = parts[1] if parts[0] == "services" and len(parts) > 1 else (
        (getattr(route, "tags", None) or ["ensemble"])[0])
    if scope["path"].startswith(API_PREFIX + "/") and not path.startswith(API_PREFIX):
        path = API_PREFIX + path
    return str(service), path


class _Server(uvicorn.Server):
    """uvicorn that keeps the signal it stopped for instead of raising it again at once: it
    would end the process before the caller's own clean-up (e.g. `ensemble up` stopping its
    nats-server) ran. ``run`` raises it once everything is stopped."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
            _stopped_by.extend(self._captured_signals)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_stopped_by: list[int] = []  # the signals a server stopped for, raised again by ``run``


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # what follows the body: http.disconnect
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def serve(app: FastAPI, host: str, port: int) -> None:
    """Run until SIGINT/SIGTERM; uvicorn then runs the lifespan's graceful stop."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    await _Server(config).serve()


T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """The event loop every Ensemble process runs on: uvloop where it installs (its loop,
    transports and with httptools its HTTP parser are C: measured in the README's benchmarks),
    plain asyncio elsewhere (Windows)."""
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main)
    else:
        result = uvloop.run(main)
    tracing.shutdown()  # the spans not yet exported, before a signal ends the process
    _exit_by_signal()
    return result


def _exit_by_signal() -> None:
    """A process stopped by SIGTERM or SIGINT ends by that signal once it has cleaned up, so
    its parent (a shell, systemd) sees why it stopped, as uvicorn intends."""
    if not _stopped_by:
        return
    sig = _stopped_by[-1]
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(sig, signal.SIG_DFL)  # SIGINT's Python handler would raise instead
    signal.raise_signal(sig)
