"""The CloudEvents `subject` rule (docs/contract.md): the referral when the event belongs to
one, else the entity its class names. Every registered event must name a field it has, or
emitting it fails; a new event without a referral_id names its own `subject_field`."""

import pytest

from contracts.events import EVENTS, Event


@pytest.mark.parametrize("ce_type", sorted(EVENTS))
def test_every_event_names_a_subject_field_it_has(ce_type: str) -> None:
    cls: type[Event] = EVENTS[ce_type]
    assert cls.subject_field in cls.model_fields, (ce_type, cls.subject_field)
    if "referral_id" in cls.model_fields and cls.model_fields["referral_id"].is_required():
        assert cls.subject_field == "referral_id", ce_type  # always a referral's
