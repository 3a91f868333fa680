"""Errors a handler or an endpoint raises on purpose. The host maps them to HTTP answers; the
consumer maps RetryLater to a delayed redelivery."""


class DomainError(Exception):
    """A request that breaks a rule of the domain (HTTP 409)."""

    status_code = 409
    headers: dict[str, str] | None = None  # sent with the answer (e.g. Retry-After)


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class RetryLater(Exception):
    """The event arrived before what it depends on; ask for it again after a delay."""


class Unavailable(RetryLater):
    """A server the handler needs besides the database (the mail server) is down or busy: ask
    again later for as long as it takes. The event is not at fault, so, as for the database,
    it is never dead-lettered for this: a short outage must not need a hand replay."""


def describe_error(exc: BaseException) -> str:
    """A reason fit for logs and dead letters: SQL parameters may hold personal data, so only
    the driver's first line is kept for database errors."""
    from sqlalchemy.exc import StatementError

    if isinstance(exc, StatementError) and exc.orig is not None:
        first = str(exc.orig).splitlines()[0] if str(exc.orig) else ""
        return f"{type(exc).__name__}: {type(exc.orig).__name__}: {first}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]
