"""Why a partner was chosen, as the console says it: every sentence partners' matching writes
is read by its shape and said again with the need's and school's names, in English and Spanish;
a sentence of an unknown shape is shown as it was written."""

from dataclasses import replace

import pytest

from services.console.i18n import load_translators
from services.console.reasons import PARTS, SHAPES, in_words
from services.partners.matching import Request, Row, rank

SCHOOLS = {"lincoln-es": "Lincoln Elementary"}
REQ = Request(district_id="d001", school_id="lincoln-es", need="mental_health", grade=3,
              language="es")


def row(**over: object) -> Row:
    base: dict[str, object] = dict(
        service_id="s1", school_id="lincoln-es", capacity=4, reserved=1, partner_id="p1",
        partner_name="Bridges", need="mental_health", languages_key=",en,es,", grades_key="")
    return Row(**(base | over))  # type: ignore[arg-type]


def every_reason() -> list[str]:
    """The reasons of matches in every situation matching tells apart."""
    cases = [
        (REQ, row()),
        (REQ, row(languages_key=",en,", grades_key=",3,4,", accepted=3, declined=1,
                  accept_seconds=3 * 7200.0, active=2)),
        (replace(REQ, in_school_only=True), row(in_school=True)),
        (replace(REQ, in_school_first=True), row(in_school=True)),
        (replace(REQ, in_school_first=True), row()),
        (REQ, row(in_school=True)),
    ]
    return [reason for request, r in cases for candidate in rank(request, [r])
            for reason in candidate.reasons]


def test_every_sentence_partners_writes_has_a_known_shape() -> None:
    reasons = every_reason()
    assert len(set(reasons)) > 20
    unknown = [r for r in reasons if not any(shape.match(r) for shape, _ in SHAPES)]
    assert unknown == []


@pytest.mark.parametrize("lang", ["en", "es"])
def test_every_reason_is_said_with_names_in_each_language(lang: str) -> None:
    say = load_translators()[lang].gettext
    said = [in_words(r, say, lambda s: SCHOOLS.get(s, s)) for r in every_reason()]
    text = " | ".join(said)
    assert "lincoln-es" not in text and "mental_health" not in text  # names, not codes
    assert "Lincoln Elementary" in text
    if lang == "es":
        assert "ofrece salud mental" in said
        assert "atiende a Lincoln Elementary" in said
        assert "3 de 4 plazas libres en Lincoln Elementary" in said
        assert any(s.startswith("puntuación ") and "idioma" in s for s in said)


def test_every_message_has_its_spanish() -> None:
    spanish = load_translators()["es"].gettext
    messages = [message for _, message in SHAPES] + list(PARTS.values())
    missing = [m for m in messages if spanish(m) == m]
    assert missing == []


def test_a_sentence_of_an_unknown_shape_is_shown_as_written() -> None:
    say = load_translators()["es"].gettext
    assert in_words("a reason from a newer partners", say, str) == "a reason from a newer partners"
