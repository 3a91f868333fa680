"""HTTP hosting: one FastAPI app for one service (a real deployment) or all of them (`ensemble
up`), with /metrics, /health/live, /health/ready, and errors that are answers, not crashes. A
web part (the console) can be mounted at `/` beside them: it has its own session instead of the
bearer-token door, and no database or consumers."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.asyncapi import asyncapi_route
from runtime.auth import Policy, authorizer
from runtime.errors import DomainError
from runtime.metrics import HTTP_REQUESTS, HTTP_SECONDS
from runtime.service import ServiceRuntime

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

    @property
    def name(self) -> str:
        return self.runtime.name


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
    for service in services:
        # Every route of a service is behind its policy; the principal's scope then limits
        # every query of the request in the data layer (runtime.tenancy).
        authorize = authorizer(service.runtime.settings.jwt_secret, service.policy)
        app.include_router(service.router, prefix="/api/v1", tags=[service.name],
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
                            headers=getattr(exc, "headers", None))

    app.add_middleware(GuardAndMeasure)
    return app


TOO_LARGE = f"body over {MAX_BODY_BYTES} bytes"


async def _refuse_too_large(scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"detail": TOO_LARGE}, status_code=413)(scope, receive, send)


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it on as a 413, not a 400."""

    def __init__(self) -> None:
        super().__init__(413, TOO_LARGE)


class GuardAndMeasure:
    """Refuses bodies over the limit and counts and times every request by route template.

    Plain ASGI: ``@app.middleware("http")`` (BaseHTTPMiddleware) runs each request in an extra
    task with a memory stream, which cost about a tenth of a service's event loop under load.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
            await self.app(scope, receive_limited, send_and_note)
        except BodyTooLarge:
            if answered:
                raise
            status = 413
            await _refuse_too_large(scope, receive, send)
        finally:
            route = scope.get("route")  # the router puts the matched route in the scope
            path = getattr(route, "path", "unmatched")  # the template, never ids in the URL
            tags = getattr(route, "tags", None) or ["ensemble"]
            method = scope["method"]
            HTTP_REQUESTS.labels(tags[0], path, method, str(status)).inc()
            HTTP_SECONDS.labels(tags[0], path, method).observe(time.perf_counter() - started)


async def serve(app: FastAPI, host: str, port: int) -> None:
    """Run until SIGINT/SIGTERM; uvicorn then runs the lifespan's graceful stop."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    await uvicorn.Server(config).serve()


T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """The event loop every Ensemble process runs on: uvloop where it installs (its loop,
    transports and with httptools its HTTP parser are C: measured in the README's benchmarks),
    plain asyncio elsewhere (Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
