"""Creates a client may retry (a timeout, a double click): with an ``Idempotency-Key`` header
the new row's id is derived from the key, per district and caller, so a retry finds what the
first request made by primary key and answers it again (200, ``Idempotent-Replay: true``), and
two copies racing cannot both insert it. The first request's answer wins: a retry with another
body under the same key gets the first one's result, not a second row."""

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar
from uuid import NAMESPACE_URL, uuid4, uuid5

from fastapi import Header, Response
from sqlalchemy.exc import IntegrityError

T = TypeVar("T")

IdempotencyKey = Annotated[str | None, Header(
    max_length=128, description="a retry with the same key answers the first request's result "
    "(200, Idempotent-Replay: true) instead of creating another")]
REPLAYED = {200: {"description": "what this Idempotency-Key already created "
                  "(Idempotent-Replay: true)"}}


def keyed_id(kind: str, district: str, who: str, key: str | None) -> str:
    """The new row's id: derived from the key when there is one, random otherwise."""
    if not key:
        return str(uuid4())
    return str(uuid5(NAMESPACE_URL, f"ensemble:{kind}:{district}:{who}:{key}"))


async def create_once(key: str | None, find: Callable[[], Awaitable[T | None]],
                         create: Callable[[], Awaitable[T]], response: Response) -> T:
    """``create()``, unless ``find()`` (by the keyed id) shows a request with this key already
    made it: then that, answered as a replay."""
    if key and (earlier := await find()) is not None:
        return _replayed(earlier, response)
    try:
        return await create()
    except IntegrityError:
        if not key or (earlier := await find()) is None:
            raise
        return _replayed(earlier, response)  # the same request, committed just before


def _replayed(earlier: T, response: Response) -> T:
    response.status_code = 200
    response.headers["Idempotent-Replay"] = "true"
    return earlier
