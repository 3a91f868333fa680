"""The email bytes written directly (``mime.email_bytes``) are the bytes the standard library's
compat32 generator writes for the message ``SmtpEmail.compose`` builds: same headers in the
same order, same MIME parts, same base64 lines; whatever the fast path does not take goes the
standard way."""

import email
from email.policy import compat32

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifications import providers
from services.notifications.providers import (
    EMAIL_POLICY,
    EMAIL_POLICY_UTF8,
    Outgoing,
    SmtpEmail,
)

SENDERS = ["Lincoln Community School <cs@lincoln.example.org>", "noreply@ensemble.local",
           "Escuela Niños <cs@lincoln.example.org>"]
HEADERS = {"Reply-To": "reply+m1.t1@ensemble.example.org",
           "List-Unsubscribe": "<https://ensemble.example.org/api/v1/messages/m1/unsubscribe"
                               "?token=t1>",
           "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "Content-Language": "es"}


class _Fixed:
    hex = "0123456789abcdef0123456789abcdef"


def _fix(patch: pytest.MonkeyPatch) -> None:
    """The same boundary and Date on both paths, so their bytes can be compared."""
    patch.setattr(providers, "uuid4", lambda: _Fixed)
    patch.setattr(providers, "formatdate", lambda localtime=False:
                  "Thu, 03 Dec 2026 16:57:37 -0000")


@pytest.fixture
def fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    _fix(monkeypatch)


def standard(smtp: SmtpEmail, message: Outgoing, utf8: bool) -> bytes:
    composed = smtp.compose(message)
    policy = EMAIL_POLICY_UTF8 if utf8 else EMAIL_POLICY
    return composed.as_bytes(policy=policy)


def check(smtp: SmtpEmail, message: Outgoing, utf8: bool = False, *, fast: bool) -> bytes:
    """``fast``: written without composing a message object (compose is not called)."""
    calls: list[Outgoing] = []
    compose = smtp.compose
    smtp.compose = lambda m: calls.append(m) or compose(m)  # type: ignore[method-assign]
    payload, message_id = smtp.payload(message, utf8)
    del smtp.compose
    assert bool(calls) is not fast
    assert payload == standard(smtp, message, utf8)
    assert message_id == f"<{message.idempotency_key}@ensemble.local>"
    return payload


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize("html", ["<p>Hola María</p>\n", None])
def test_a_family_message_is_the_standard_bytes(fixed: None, sender: str,
                                                html: str | None) -> None:
    smtp = SmtpEmail("smtp://127.0.0.1:25", sender)
    # A long non-ASCII subject is several encoded-words on folded lines: the standard path.
    for subject, short in (("Schools closed tomorrow", True), ("Escuelas cerradas mañana", True),
                           ("学校明天停课", True), ("Una conexión " * 20, False)):
        payload = check(smtp, Outgoing("family@example.org", subject,
                                       "Hola María,\n" + "texto " * 200 + "\n", html, "k-1",
                                       HEADERS), fast=sender.isascii() and short)
        parsed = email.message_from_bytes(payload, policy=compat32)
        assert parsed["Message-ID"] == "<k-1@ensemble.local>"
        text = next(p for p in parsed.walk() if p.get_content_type() == "text/plain")
        assert text.get_payload(decode=True).decode("utf-8").startswith("Hola María,\ntexto")


def test_unusual_headers_take_the_standard_path(fixed: None) -> None:
    smtp = SmtpEmail("smtp://127.0.0.1:25", SENDERS[0])
    long_link = "<https://ensemble.example.org/u/" + "x" * 1200 + ">"
    for headers in ({"List-Unsubscribe": long_link}, {"X-Folded": "a\n b"},
                    {"X-Name": "Niños"}):
        check(smtp, Outgoing("family@example.org", "Hi", "text\n", "<p>text</p>\n", "k-2",
                             headers), fast=False)


def test_an_smtputf8_address_is_written_as_utf8(fixed: None) -> None:
    smtp = SmtpEmail("smtp://127.0.0.1:25", SENDERS[0])
    payload = check(smtp, Outgoing("josé@example.org", "Hola", "texto\n", None, "k-3"),
                    utf8=True, fast=True)
    assert "To: josé@example.org\r\n".encode() in payload


@settings(max_examples=150, deadline=None)
@given(subject=st.text(max_size=120), text=st.text(max_size=400),
       html=st.none() | st.text(max_size=400), utf8=st.booleans())
def test_any_text_is_the_standard_bytes(subject: str, text: str, html: str | None,
                                        utf8: bool) -> None:
    with pytest.MonkeyPatch.context() as patch:
        _fix(patch)
        smtp = SmtpEmail("smtp://127.0.0.1:25", SENDERS[1])
        message = Outgoing("family@example.org", subject, text, html, "k-4", HEADERS)
        try:
            expected = standard(smtp, message, utf8)
        except (UnicodeEncodeError, ValueError):  # the standard path refuses it too
            with pytest.raises((UnicodeEncodeError, ValueError)):
                smtp.payload(message, utf8)
            return
        assert smtp.payload(message, utf8)[0] == expected
