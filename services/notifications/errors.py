"""Send outcomes a provider adapter raises, so the caller can decide: retry or give up.

Reasons are short, fixed texts plus provider codes. They never carry the provider's free-text
message, because providers echo phone numbers and addresses back in it and reasons end up in
logs and in the public ``notifications.failed`` event.
"""


class SendError(Exception):
    """Base class: the message was not accepted by the provider."""

    def __init__(self, reason: str, *, code: int | None = None, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.code = code  # provider error code, e.g. Twilio 21211
        self.status = status  # HTTP status, None for network errors


class TransientSendError(SendError):
    """Worth retrying later (rate limit, provider outage, network trouble) with the same key."""

    def __init__(
        self,
        reason: str,
        *,
        code: int | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(reason, code=code, status=status)
        self.retry_after = retry_after  # seconds, from a Retry-After header when given


class PermanentSendError(SendError):
    """Retrying cannot help (invalid number, recipient unsubscribed, request rejected)."""
