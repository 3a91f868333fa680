"""Ensemble's integration events: the versioned contract every service and integrator shares.

Public events carry ids, categories, states and times only. Internal commands (``internal=True``)
may carry personal data and travel on ``ensemble_internal.*`` subjects that integrators cannot read.
"""

from contracts.envelope import Envelope, EnvelopeError, decode_envelope
from contracts.events import EVENTS, Event, event_class
from contracts.subjects import dlq_subject, public_subject, subject_for

__all__ = [
    "EVENTS",
    "Envelope",
    "EnvelopeError",
    "Event",
    "decode_envelope",
    "dlq_subject",
    "event_class",
    "public_subject",
    "subject_for",
]
