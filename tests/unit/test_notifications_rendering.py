"""Family message templates: every kind, language and part renders, escapes and fits."""

from pathlib import Path

import pytest
from jinja2 import UndefinedError, meta

from contracts.taxonomy import Need
from services.notifications import rendering
from services.notifications.rendering import (
    KIND_VARIABLES,
    KINDS,
    SUPPORTED_LANGUAGES,
    TEMPLATES_DIR,
    Rendered,
    TemplateMissingError,
    make_environment,
    need_label,
    normalize_language,
    paragraphs,
    render,
)
from services.notifications.sms_segments import count_segments

# Realistic, on the long side, so the SMS length checks mean something.
SAMPLE = {
    "family_name": "Maria",
    "school_name": "Roosevelt Community School",
    "need_label": "dental care",
    "partner_name": "Sunrise Family Dental Clinic",
    "unsubscribe_url": "https://ensemble.example.org/u/3f9a1c2b7d",
    "title": "Family Math Night",
    "starts_at_local": "Thu, May 8, 6:00 PM",
    "place": "School library, Room 104",
    "rsvp_url": "https://ensemble.example.org/r/8kQ2xZ",
    "reply_code": "12",  # several outreach open at one phone: the longest code
    "urgency_label": "urgent",
    "url": "https://ensemble.example.org/p/eyJhbGciOiJIUzI1NiJ9.e30.sig",
    "expires": "2026-12-06 14:00",
    "body": (
        "Join us to play math games with your kids. Dinner will be served and childcare is "
        "available for younger siblings.\nPlease bring a friend!"
    ),
}
CASES = [
    (lang, kind, part)
    for lang in SUPPORTED_LANGUAGES
    for kind, parts in KINDS.items()
    for part in parts
]
OPT_OUT_HINT = {
    "en": "Reply STOP",
    "es": "Responda STOP",
    "vi": "Nhắn STOP",
    "zh": "回复STOP",
    "ar": "أرسلوا STOP",
}


def _vars(kind: str) -> dict[str, str]:
    return {k: v for k, v in SAMPLE.items() if k in KIND_VARIABLES[kind]}


@pytest.mark.parametrize(("lang", "kind", "part"), CASES)
def test_every_template_renders_in_its_own_language(lang: str, kind: str, part: str) -> None:
    result = render(kind, lang, part, **_vars(kind))
    assert result == Rendered(result.text, lang, False)
    assert result.text.strip()
    assert "{{" not in result.text and "}}" not in result.text
    if part in ("subject", "sms"):
        assert "\n" not in result.text


@pytest.mark.parametrize(("lang", "kind", "part"), CASES)
def test_templates_use_only_documented_variables_and_each_one_is_required(
    lang: str, kind: str, part: str
) -> None:
    env = make_environment()
    source = env.loader.get_source(env, f"{lang}/{kind}.{part}.j2")[0]  # type: ignore[union-attr]
    used = meta.find_undeclared_variables(env.parse(source))
    assert used <= KIND_VARIABLES[kind]
    if part == "sms":  # a text has no sender name, so it must say who is writing
        assert "school_name" in used
    for missing in used:  # StrictUndefined: a forgotten variable is an error, not a blank
        with pytest.raises(UndefinedError):
            render(kind, lang, part, **{k: v for k, v in _vars(kind).items() if k != missing})


def test_template_tree_is_complete_and_has_nothing_stray() -> None:
    expected = {Path(lang, f"{kind}.{part}.j2") for lang, kind, part in CASES}
    on_disk = {p.relative_to(TEMPLATES_DIR) for p in TEMPLATES_DIR.rglob("*.j2")}
    assert on_disk == expected


def test_email_parts_carry_the_details_and_the_unsubscribe_link() -> None:
    for lang in SUPPORTED_LANGUAGES:
        for part in ("txt", "html"):
            text = render("partner_matched", lang, part, **_vars("partner_matched")).text
            for key in ("family_name", "partner_name", "need_label", "unsubscribe_url"):
                assert SAMPLE[key] in text, (lang, part, key)
            event = render(
                "family_event_invitation", lang, part, **_vars("family_event_invitation")
            )
            for key in ("title", "starts_at_local", "place", "rsvp_url", "unsubscribe_url"):
                assert SAMPLE[key] in event.text, (lang, part, key)


@pytest.mark.parametrize(
    ("tag", "used", "fell_back"),
    [
        ("fr", "en", True),
        ("", "en", True),
        ("en", "en", False),
        ("en-US", "en", False),
        ("es-MX", "es", False),
        ("ES", "es", False),
        ("zh-Hant", "zh", False),
        ("zh_Hant_TW", "zh", False),
        ("vi-VN", "vi", False),
        ("AR-eg", "ar", False),
    ],
)
def test_language_tags_normalize_and_unknown_ones_fall_back_to_english(
    tag: str, used: str, fell_back: bool
) -> None:
    result = render("announcement", tag, "subject", **_vars("announcement"))
    assert (result.language, result.fell_back) == (used, fell_back)
    assert result.text == render("announcement", used, "subject", **_vars("announcement")).text


def test_normalize_language() -> None:
    assert normalize_language("zh-Hant") == "zh"
    assert normalize_language(" Es_mx ") == "es"
    assert normalize_language(None) == ""


def test_missing_template_in_a_supported_language_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "es").mkdir()
    (tmp_path / "en" / "welcome.sms.j2").write_text("Welcome to {{ school_name }}")
    monkeypatch.setattr(rendering, "_environment", lambda: make_environment(tmp_path))
    result = render("welcome", "es", "sms", school_name="Lincoln")
    assert result == Rendered("Welcome to Lincoln", "en", True)


def test_unknown_kind_or_part_is_an_error_not_a_path() -> None:
    with pytest.raises(TemplateMissingError):
        render("no_such_kind", "en", "sms", school_name="x")
    with pytest.raises(TemplateMissingError):
        render("opt_out_confirmation", "en", "html", school_name="x")  # SMS only
    with pytest.raises(TemplateMissingError):
        render("../en/announcement", "en", "sms", school_name="x")


def test_html_escapes_a_hostile_partner_name_but_text_parts_do_not() -> None:
    hostile = {**_vars("partner_matched"), "partner_name": '<script>alert("x")</script> & Co'}
    for lang in SUPPORTED_LANGUAGES:
        html = render("partner_matched", lang, "html", **hostile).text
        assert "<script>" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in html
        sms = render("partner_matched", lang, "sms", **hostile).text
        assert '<script>alert("x")</script> & Co' in sms  # SMS and plain text are not HTML
        assert "&amp;" not in render("partner_matched", lang, "txt", **hostile).text


def test_html_escapes_urls_in_attributes() -> None:
    variables = {**_vars("family_event_invitation"), "rsvp_url": 'https://x.example/r?a=1&b="2"'}
    html = render("family_event_invitation", "en", "html", **variables).text
    assert 'href="https://x.example/r?a=1&amp;b=&#34;2&#34;"' in html


def test_announcement_body_becomes_escaped_paragraphs_in_html() -> None:
    variables = {**_vars("announcement"), "body": "No school <Friday>.\nBuses run late.\n\nA & B"}
    html = render("announcement", "es", "html", **variables).text
    assert "No school &lt;Friday&gt;.<br>\nBuses run late.</p>" in html
    assert ">A &amp; B</p>" in html
    assert paragraphs("x\r\n\r\n\r\ny") == (
        '<p style="margin:0 0 16px 0;">x</p>\n<p style="margin:0 0 16px 0;">y</p>'
    )


def test_arabic_html_is_right_to_left_and_others_left_to_right() -> None:
    for kind in ("partner_matched", "family_event_invitation", "announcement"):
        for lang in SUPPORTED_LANGUAGES:
            html = render(kind, lang, "html", **_vars(kind)).text
            direction = "rtl" if lang == "ar" else "ltr"
            assert f'dir="{direction}"' in html
            assert html.startswith("<!DOCTYPE html>")
        assert '<html lang="ar" dir="rtl">' in render(kind, "ar", "html", **_vars(kind)).text


@pytest.mark.parametrize(("lang", "kind"), [(c[0], c[1]) for c in CASES if c[2] == "sms"])
def test_sms_fits_three_segments_and_tells_how_to_opt_out(lang: str, kind: str) -> None:
    text = render(kind, lang, "sms", **_vars(kind)).text
    length = count_segments(text)
    assert 1 <= length.segments <= 3, (length, text)
    if lang == "en":
        assert length.encoding == "GSM-7"  # no stray curly quotes turning English into UCS-2
    if kind == "opt_out_confirmation":
        assert "START" in text
    else:
        assert OPT_OUT_HINT[lang] in text


def test_long_announcement_body_is_shortened_for_sms_only() -> None:
    variables = {**_vars("announcement"), "body": "Important update for families. " * 40}
    for lang in SUPPORTED_LANGUAGES:
        sms = render("announcement", lang, "sms", **variables).text
        assert count_segments(sms).segments <= 3
        assert "..." in sms
        assert variables["body"].strip() in render("announcement", lang, "txt", **variables).text


def test_need_labels_cover_every_need_in_every_language() -> None:
    for lang in SUPPORTED_LANGUAGES:
        labels = [need_label(need.value, lang) for need in Need]
        assert all(labels) and len(set(labels)) == len(labels), lang
    assert need_label("dental", "es-MX") == "atención dental"
    assert need_label("dental", "fr") == "dental care"
    assert need_label("not_a_need", "vi") == need_label("other", "vi")


def test_need_is_localized_into_the_language_actually_used() -> None:
    variables = {k: v for k, v in _vars("partner_matched").items() if k != "need_label"}
    spanish = render("partner_matched", "es", "txt", need="housing", **variables)
    assert "Tipo de ayuda: vivienda" in spanish.text
    french = render("partner_matched", "fr", "txt", need="housing", **variables)
    assert french.fell_back and "Type of help: housing" in french.text


def test_sensitive_need_stays_out_of_subject_and_sms() -> None:
    # Subjects and texts show on lock screens; the kind of help is only inside the email.
    variables = {**_vars("partner_matched"), "need_label": "mental health support"}
    for lang in SUPPORTED_LANGUAGES:
        for part in ("subject", "sms"):
            assert "mental health" not in render("partner_matched", lang, part, **variables).text


@pytest.mark.parametrize("subject", ["A new connection for your family",
                                     "Una nueva conexión para su familia"])
def test_email_bytes_are_what_the_standard_compat32_policy_writes(subject: str) -> None:
    from email.policy import compat32

    from services.notifications.providers import EMAIL_POLICY, Outgoing, SmtpEmail

    smtp = SmtpEmail("smtp://127.0.0.1:25", "Lincoln Community School <cs@lincoln.example.org>")
    long_link = "<https://ensemble.example.org/u/" + "x" * 200 + ">"
    email = smtp.compose(Outgoing(
        to="family@example.org", subject=subject, text="Hola María,\n" + "texto " * 200,
        html="<p>Hola María</p>", idempotency_key="k-1",
        headers={"List-Unsubscribe": long_link, "X-Spaced": "a  b\tc", "X-Long": "y " * 600}))
    standard = compat32.clone(max_line_length=998, linesep="\r\n")
    assert email.as_bytes(policy=EMAIL_POLICY) == email.as_bytes(policy=standard)


@pytest.mark.parametrize(("lang", "kind", "part"), CASES)
@pytest.mark.parametrize("family", [
    {"family_name": "Ana  María", "unsubscribe_url": "https://e.example/u?a=1&b=<2>",
     "reply_code": "K7"},
    {"family_name": "O'Brien & \"Sons\"", "unsubscribe_url": "https://e.example/u/x y",
     "reply_code": ""},
])
def test_a_template_rendered_once_per_batch_is_each_familys_own_text(
        lang: str, kind: str, part: str, family: dict[str, str]) -> None:
    """Rendering a template once with markers for what differs per family (its name, its
    unsubscribe link, its reply code) and writing each family's values in is the same text as
    rendering it for that family, escaped the same: twice, so the second comes from the cache."""
    variables = {**_vars(kind), **{k: v for k, v in family.items()
                                   if k in KIND_VARIABLES[kind]}}
    env = rendering._environment()
    template = env.get_template(f"{lang}/{kind}.{part}.j2")
    for _ in range(2):
        assert rendering._render(template, dict(variables)) == template.render(**variables)


def test_a_template_that_does_more_than_print_a_familys_value_is_rendered_per_family() -> None:
    # partner_matched.sms tests reply_code: never rendered from a batch's skeleton.
    assert not rendering._prints_bare("en/partner_matched.sms.j2")
    assert rendering._prints_bare("en/announcement.html.j2")
