"""The subject scheme. The district is a subject token so a NATS permission can scope to it.

- public:   ensemble.<district>.<domain>.<event>
- internal: ensemble_internal.<district>.<domain>.<command>   (personal data; never integrators)
- dead letters: ensemble_dlq.<service>.<original subject>

Internal and dead-letter subjects have their own roots so that no two streams' subjects overlap.
"""

import re

PUBLIC_ROOT = "ensemble"
INTERNAL_ROOT = "ensemble_internal"
DLQ_ROOT = "ensemble_dlq"

TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_token(value: str, what: str = "district id") -> str:
    if not TOKEN.fullmatch(value):
        raise ValueError(f"{what} {value!r} must be 1-64 letters, digits, '-' or '_'")
    return value


def public_subject(district: str, domain: str, name: str) -> str:
    return f"{PUBLIC_ROOT}.{check_token(district)}.{domain}.{name}"


def internal_subject(district: str, domain: str, name: str) -> str:
    return f"{INTERNAL_ROOT}.{check_token(district)}.{domain}.{name}"


def subject_for(event_cls: type, district: str) -> str:
    make = internal_subject if event_cls.internal else public_subject
    return make(district, event_cls.domain, event_cls.name)


def filter_for(event_cls: type) -> str:
    """The subject filter of a consumer of this event across every district."""
    root = INTERNAL_ROOT if event_cls.internal else PUBLIC_ROOT
    return f"{root}.*.{event_cls.domain}.{event_cls.name}"


def dlq_subject(service: str, original_subject: str) -> str:
    return f"{DLQ_ROOT}.{service}.{original_subject}"
