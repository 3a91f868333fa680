"""A real webhook receiver for tests: uvicorn on a loopback port, checking signatures the way
an integrator would (examples/verify_webhook.py) and keeping one accepted delivery per id."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from fastapi import FastAPI, Request, Response

from ensemble.embedded import free_port
from examples.verify_webhook import verify_signature


@dataclass
class Route:
    """How one receiver path behaves: fail its first ``fail_first`` requests, always fail while
    ``down``, take ``slow_first`` requests too slowly (after processing them)."""

    secret: str = ""
    fail_first: int = 0
    down: bool = False
    slow_first: int = 0
    slow_seconds: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)  # by delivery id
    duplicates: int = 0
    bad_signatures: int = 0

    def events(self) -> list[dict[str, Any]]:
        return [r["event"] for r in self.accepted.values()]


class Receiver:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.app = FastAPI()
        self.app.post("/hooks/{name}")(self.receive)

    async def receive(self, name: str, request: Request) -> Response:
        route = self.routes[name]
        body = await request.body()
        headers = dict(request.headers)
        route.requests.append({"headers": headers, "body": body})
        if not verify_signature(route.secret, headers.get("ensemble-signature", ""), body):
            route.bad_signatures += 1
            return Response(status_code=401)
        if route.down or len(route.requests) <= route.fail_first:
            return Response(status_code=503)
        delivery = headers["ensemble-delivery-id"]
        if delivery in route.accepted:  # the receiver's idempotency: at least once in, once out
            route.duplicates += 1
        else:
            event = from_http_event(HTTPMessage(headers=headers, body=body))
            route.accepted[delivery] = {"event": json.loads(body), "cloudevent": event}
        if len(route.requests) <= route.slow_first:
            await asyncio.sleep(route.slow_seconds)  # processed, but the sender times out
        return Response(status_code=204)


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="off"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task

