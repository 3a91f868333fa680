"""Structured JSON logs carrying the correlation id of the referral's chain of events, and the
trace and span ids of the span in hand when tracing is on (runtime/tracing.py).

Messages must never contain personal data; code logs ids and reasons only."""

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from runtime import tracing

_correlation: ContextVar[str | None] = ContextVar("correlation", default=None)


@contextmanager
def correlation(value: str | None) -> Iterator[None]:
    token = _correlation.set(value)
    try:
        yield
    finally:
        _correlation.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if corr := _correlation.get():
            entry["correlation_id"] = corr
        if found := tracing.ids():  # the span in hand, when tracing is on
            entry["trace_id"], entry["span_id"] = found
        if record.exc_info and record.exc_info[1] is not None:
            from runtime.errors import describe_error

            exc = record.exc_info[1]
            entry["error"] = describe_error(exc)
            # Where it happened, without the message (SQL parameters may hold personal data).
            entry["trace"] = [
                f"{frame.filename}:{frame.lineno} {frame.name}"
                for frame in traceback.extract_tb(exc.__traceback__)
            ][-12:]
        return json.dumps(entry)


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_logs else logging.Formatter("%(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log prints query strings; ours records routes in metrics instead.
    logging.getLogger("uvicorn.access").disabled = True
    # Per-connection and per-request chatter from the SMTP server and HTTP client.
    for noisy in ("mail.log", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
