"""The private boundary: events on integrator subjects carry ids, categories, numbers and times,
never names, phone numbers, emails, addresses or free-text notes. Personal data travels only on
internal subjects (ensemble_internal.*), which integrators cannot subscribe to.

Two checks: a whole scenario is run through the system and every message of every public
stream is scanned for the personal data that went in (the internal stream is scanned too, to
show the data was there to leak); and every public event class's fields are checked statically
against an allow-list of types and a deny-list of names.
"""

import re
import types
import typing
import uuid
from datetime import date, datetime
from enum import Enum
from typing import Any

import pytest
from conftest import System
from nats.aio.msg import Msg
from pydantic import BaseModel
from support.replies import reply_by_email
from support.streams import PUBLIC_STREAMS, read_stream

from contracts.events import EVENTS, Event


async def settled(system: System) -> bool:
    """Every service's consumers have taken and acked everything (the loop has gone quiet)."""
    js = system.services["referrals"].runtime.jetstream
    for stream in (*PUBLIC_STREAMS, "ENSEMBLE_INTERNAL"):
        for consumer in await js.consumers_info(stream):
            if consumer.num_pending or consumer.num_ack_pending:
                return False
    for service in system.services.values():
        await service.runtime.relay.update_gauges()
    return True


async def reply_by_sms(system: System, phone: str, text: str) -> None:
    """The family texts back: the provider posts Twilio's signed inbound webhook."""
    from services.notifications.twilio import SIGNATURE_HEADER, compute_signature

    async def sent() -> bool:
        return system.sms_store.exists()

    await system.eventually(sent, what="the text message")
    url = str(system.http.base_url).rstrip("/") + "/api/v1/sms/inbound"
    form = {"MessageSid": "SM" + uuid.uuid4().hex, "From": phone, "To": "+15005550006",
            "Body": text}
    signature = compute_signature(system.settings.sms_auth_token, url, form)
    reply = await system.http.post(url, data=form, headers={SIGNATURE_HEADER: signature})
    assert reply.status_code == 200, reply.text


def variants(phone_national: str) -> list[str]:
    digits = re.sub(r"\D", "", phone_national)
    return [f"+1{digits}", digits, phone_national, f"{digits[3:6]}-{digits[6:]}"]


async def test_no_personal_data_on_public_subjects(system: System) -> None:
    tag = uuid.uuid4().hex[:6]
    first = {"name": f"Zebulon Quixley{tag}", "email": f"zq.marchetti{tag}@example.org",
             "phone": "(415) 555-0187"}
    second = {"name": f"Philippa Oyelaran{tag}", "email": f"p.whitcombe{tag}@example.org",
              "phone": "(415) 555-0163"}
    notes = [f"Toothache since March, dad works nights {tag}",
             f"Grandmother Ophelia asked about the clinic {tag}",
             f"Lives at 1428 Elm Street apartment {tag}"]
    replies = [f"Yes please, call me after six {tag}", f"Vang, cam on nhieu {tag}"]

    await system.register_partner(name="Smile Bright Dental", needs=["dental"])
    await system.register_partner(name="Harbor Counseling", needs=["mental_health"],
                                  schools=["roosevelt-ms"], languages=["en", "vi"])
    fam1 = await system.register_family(name=first["name"], email=first["email"],
                                        phone=first["phone"], preferred_channel="email")
    fam2 = await system.register_family(name=second["name"], email=second["email"],
                                        phone=second["phone"], preferred_channel="sms",
                                        sms_consent=True, school_id="roosevelt-ms",
                                        preferred_language="vi")
    dental = await system.open_referral(fam1, note=notes[0])
    counseling = await system.open_referral(fam2, need="mental_health", urgency="urgent",
                                            note=notes[1])
    unserved = await system.open_referral(fam1, need="vision", note=notes[2])
    await reply_by_email(system, first["email"], replies[0])
    await reply_by_sms(system, "+14155550163", replies[1])
    await system.wait_status(dental["id"], "family_contacted")
    await system.wait_status(counseling["id"], "family_contacted")
    await system.wait_status(unserved["id"], "no_partner")

    logged = await system.http.post(f"/api/v1/families/{fam1['id']}/contacts", json={
        "district_id": "d001", "kind": "phone_call", "referral_id": dental["id"],
        "note": notes[1]})
    assert logged.status_code == 201, logged.text
    added = await system.http.post(f"/api/v1/referrals/{dental['id']}/notes",
                                   json={"district_id": "d001", "text": notes[2]})
    assert added.status_code == 201, added.text
    for referral, outcome in ((dental, "services_received"), (unserved, "unmet_no_partner")):
        closed = await system.http.post(f"/api/v1/referrals/{referral['id']}/close",
                                        json={"district_id": "d001", "outcome": outcome})
        assert closed.status_code == 200, closed.text
    await system.wait_status(dental["id"], "closed")
    await system.eventually(lambda: settled(system), 30, "every consumer caught up")

    js = system.services["referrals"].runtime.jetstream
    public = [m for stream in PUBLIC_STREAMS for m in await read_stream(js, stream)]
    internal = await read_stream(js, "ENSEMBLE_INTERNAL")

    def text(messages: list[Msg]) -> str:
        return "\n".join(m.subject + repr(m.headers) + m.data.decode() for m in messages).lower()

    public_text, internal_text = text(public), text(internal)
    personal = [*first["name"].split(), *second["name"].split(), first["email"],
                second["email"], first["email"].split("@")[0], *variants(first["phone"]),
                *variants(second["phone"]), *notes, *replies, "toothache", "ophelia",
                "elm street", "call me after", "cam on"]
    leaked = [p for p in personal if p.lower() in public_text]
    assert leaked == [], f"personal data on public subjects: {leaked}"

    # The scan is meaningful: there were public events about these families and referrals...
    types_seen = {m.subject.split(".", 2)[2] for m in public}
    assert {"referrals.opened", "partners.matched", "engagement.family_contacted",
            "referrals.closed", "partners.no_partner_available",
            "notifications.sent"} <= types_seen
    for some_id in (fam1["id"], fam2["id"], dental["id"], counseling["id"], unserved["id"]):
        assert some_id in public_text
    assert all(m.subject.startswith("ensemble.d001.") for m in public)
    # ...the internal stream did carry their contact details to notifications...
    for carried in (first["name"], second["name"], first["email"], "+14155550163", *replies):
        assert carried.lower() in internal_text, carried
    assert all(m.subject.startswith("ensemble_internal.") for m in internal)
    # ...and the notes were stored where they belong.
    detail = await system.referral(dental["id"])
    assert detail["note"] == notes[0]


# --- static: the public event classes ----------------------------------------------------------

# Words that name personal data (or free text that may hold it) in a field name.
PERSONAL_WORDS = {"name", "names", "phone", "phones", "email", "emails", "address", "addresses",
                  "note", "notes", "text", "comment", "comments", "message", "body", "birth",
                  "dob", "ssn", "street", "zip"}
ID_SUFFIXES = ("_id", "_ref")
# str fields holding a code from a closed vocabulary that is not (yet) an enum.
CODE_FIELDS = {"status", "kind", "language", "preferred_language", "languages", "response",
               "via"}
CODE_MAX_LENGTH = 64  # a str field named "reason" with at most this many characters is a code
SAFE_TYPES = (datetime, date, int, float, bool)

# Fields reviewed one by one: why each may stay on a public event. A stale entry fails the test.
REVIEWED = {
    ("org.ensemble.partners.matched.v1", "partner_name"):
        "an organization's public name, not a person's; engagement writes it to the family",
    ("org.ensemble.partners.matched.v1", "reasons"):
        "generated by matching from rules (language, score); no input text",
    ("org.ensemble.partners.no_partner_available.v1", "reason"):
        "generated from the need and school id; no input text",
    ("org.ensemble.notifications.failed.v1", "reason"):
        "provider reason, scrubbed of addresses and numbers by services/notifications/errors.py",
    ("org.ensemble.engagement.family_event_scheduled.v1", "title"):
        "a school workshop's public title",
    ("org.ensemble.referrals.consent_recorded.v1", "recorded_by"):
        "declared an Id: the staff user's id (see the test below)",
}


def _leaves(annotation: Any) -> list[Any]:
    """The types a field can hold: Optional, unions, lists and Literals unwrapped."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _leaves(arg)]
    if origin in (list, tuple, set, frozenset):
        return [t for arg in typing.get_args(annotation) if arg is not Ellipsis
                for t in _leaves(arg)]
    if origin is typing.Literal:
        return [typing.Literal]
    if origin is typing.Annotated:
        return _leaves(typing.get_args(annotation)[0])
    return [annotation]


def field_problems(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Field path -> why it is not allowed on a public event."""
    problems: dict[str, str] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if PERSONAL_WORDS & set(name.lower().split("_")):
            problems[path] = "its name says personal data or free text"
            continue
        for leaf in _leaves(info.annotation):
            if leaf is type(None) or leaf is typing.Literal:
                continue
            if isinstance(leaf, type) and issubclass(leaf, Enum):
                continue
            if isinstance(leaf, type) and issubclass(leaf, BaseModel):
                problems.update(field_problems(leaf, f"{path}."))
                continue
            if leaf in SAFE_TYPES:
                continue
            if leaf is str:
                max_length = next((m.max_length for m in info.metadata
                                   if getattr(m, "max_length", None)), None)
                if name.endswith(ID_SUFFIXES) or name in CODE_FIELDS:
                    continue
                if name == "reason" and max_length and max_length <= CODE_MAX_LENGTH:
                    continue
                problems[path] = "a str that is neither an id nor a code: free text?"
                continue
            problems[path] = f"type {leaf!r} is not an id, category, number or time"
    return problems


def public_event_classes() -> dict[str, type[Event]]:
    return {t: cls for t, cls in EVENTS.items() if not cls.internal}


def test_public_event_fields_are_ids_categories_numbers_and_times() -> None:
    found = {(t, path): why for t, cls in public_event_classes().items()
             for path, why in field_problems(cls).items()}
    unreviewed = {key: why for key, why in found.items() if key not in REVIEWED}
    assert unreviewed == {}, (
        "public events may carry only ids, categories, numbers and times; move personal data "
        "to an internal event (ensemble_internal.*) or review the field in REVIEWED")
    # An entry for an event type no longer (or not yet) defined is ignored, not stale.
    stale = sorted(k for k in set(REVIEWED) - set(found) if k[0] in public_event_classes())
    assert stale == [], f"REVIEWED entries no longer needed: {stale}"


def test_internal_events_are_on_internal_subjects_only() -> None:
    from contracts.subjects import subject_for

    for cls in EVENTS.values():
        subject = subject_for(cls, "d001")
        assert subject.startswith("ensemble_internal.") == cls.internal, subject
        if not cls.internal:
            assert subject.startswith("ensemble.d001.")


@pytest.mark.parametrize(("field", "annotation"), [
    ("family_name", str), ("phone", str | None), ("email_address", str), ("note", str),
    ("free_text", str), ("comment", str), ("contact", dict[str, str]), ("summary", str),
])
def test_the_static_check_catches_personal_fields(field: str, annotation: Any) -> None:
    from pydantic import create_model

    bad = create_model("Leaky", referral_id=(str, ...), **{field: (annotation, ...)})
    assert list(field_problems(bad)) == [field]


def test_the_static_check_passes_ids_categories_numbers_times() -> None:
    from pydantic import create_model

    from contracts.taxonomy import Need

    ok = create_model("Fine", referral_id=(str, ...), student_ref=(str, ...),
                      need=(Need, ...), needs=(list[Need], []), at=(datetime, ...),
                      count=(int | None, None), status=(str, ...))
    assert field_problems(ok) == {}


def test_consent_recorder_is_an_id_not_free_text() -> None:
    from pydantic import ValidationError

    from services.referrals import api

    if "recorded_by" not in api.RecordConsent.model_fields:
        return  # taken from the caller's token: fixed
    body = {"district_id": "d001", "consent": "given", "recorded_by": "Ms. Yolanda Rivera"}
    with pytest.raises(ValidationError):
        api.RecordConsent.model_validate(body)
