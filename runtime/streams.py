"""JetStream streams, declared in one place. Every service makes sure all exist at start (creating
only what is missing, never rewriting another's configuration), so start order does not matter."""

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from contracts.subjects import DLQ_ROOT, INTERNAL_ROOT, PUBLIC_ROOT

DAY = 24 * 3600.0


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_days: float
    description: str


# Public streams keep a school year and a summer so integrators can replay history.
STREAMS: tuple[StreamSpec, ...] = (
    *(
        StreamSpec(
            f"ENSEMBLE_{domain.upper()}",
            (f"{PUBLIC_ROOT}.*.{domain}.>",),
            400,
            f"public {domain} events, all districts",
        )
        for domain in ("referrals", "partners", "engagement", "notifications")
    ),
    StreamSpec("ENSEMBLE_INTERNAL", (f"{INTERNAL_ROOT}.>",), 30, "internal commands with PII"),
    StreamSpec("ENSEMBLE_DLQ", (f"{DLQ_ROOT}.>",), 90, "dead letters with their reason"),
)

def stream_for_subject(subject: str) -> str:
    """The stream that captures a subject or a consumer's filter."""
    root, _district, domain, *_ = [*subject.split("."), "", "", ""]
    if root == PUBLIC_ROOT:
        return f"ENSEMBLE_{domain.upper()}"
    if root == INTERNAL_ROOT:
        return "ENSEMBLE_INTERNAL"
    if root == DLQ_ROOT:
        return "ENSEMBLE_DLQ"
    raise ValueError(f"no stream captures {subject!r}")


def stream_config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=spec.max_age_days * DAY,
        num_replicas=replicas,
        # Longer than the 2-minute default: an outbox relay that restarts republishes safely.
        duplicate_window=30 * 60.0,
    )


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    for spec in STREAMS:
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(stream_config(spec, replicas))


async def streams_exist(js: JetStreamContext) -> bool:
    try:
        for spec in STREAMS:
            await js.stream_info(spec.name)
    except NotFoundError:
        return False
    return True
