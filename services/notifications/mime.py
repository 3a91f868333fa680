"""A family's email as the bytes the standard library's compat32 generator writes, written
directly: a fan-out composes thousands a second, and building ``email.message`` objects and
flattening them through ``email.generator`` was most of a message's CPU. Only what every
family message is takes this path (a text part, optionally an HTML alternative, UTF-8,
headers that need no folding); anything else returns None and goes the standard way.
``tests/unit/test_notifications_mime.py`` holds the bytes equal to the generator's."""

import binascii
from email.header import Header
from functools import lru_cache

CRLF = b"\r\n"
MAX_LINE = 998  # RFC 5322, without the CRLF (EMAIL_POLICY's max_line_length)
_TEXT_PART = (b'Content-Type: text/%s; charset="utf-8"\r\nMIME-Version: 1.0\r\n'
              b"Content-Transfer-Encoding: base64\r\n")


@lru_cache(maxsize=256)
def subject_value(subject: str) -> str:
    """The Subject as composed: as it is when ASCII, else RFC 2047 encoded-words (an
    announcement's subject is the same for a whole language: encoded once)."""
    return subject if subject.isascii() else Header(subject, "utf-8").encode()


def _base64_lines(data: bytes) -> bytes:
    """What MIMEText's utf-8 body is: base64 in lines of 76, each ended by CRLF."""
    return b"".join(binascii.b2a_base64(data[i:i + 57]).replace(b"\n", CRLF)
                    for i in range(0, len(data), 57))


def _header(name: str, value: str, utf8: bool) -> bytes | None:
    """One header line as compat32 writes it unfolded, or None when it would be folded or
    encoded (then the caller takes the standard path)."""
    if "\n" in value or "\r" in value or not (utf8 or value.isascii()):
        return None
    line = f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")
    return line if len(line) <= MAX_LINE + 2 else None


def _body(text: str) -> bytes | None:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the standard path says what it does
        return None
    return _base64_lines(data) if data else None  # an empty part is written otherwise


def email_bytes(headers: list[tuple[str, str]], text: str, html: str | None, boundary: str,
                utf8: bool) -> bytes | None:
    """The message: ``headers`` in order after the MIME ones, a text part, an HTML alternative
    when given. None when any part of it is not the plain case."""
    plain = _body(text)
    rich = _body(html) if html is not None else b""
    lines = [_header(name, value, utf8) for name, value in headers]
    if plain is None or rich is None or any(line is None for line in lines):
        return None
    head = b"".join(lines)  # type: ignore[arg-type]  # no None left
    if html is None:
        return b"".join((_TEXT_PART % b"plain", head, CRLF, plain))
    mark = b"--" + boundary.encode("ascii")
    return b"".join((
        b'Content-Type: multipart/alternative; boundary="', boundary.encode("ascii"), b'"\r\n',
        b"MIME-Version: 1.0\r\n", head, CRLF,
        mark, CRLF, _TEXT_PART % b"plain", CRLF, plain,
        CRLF, mark, CRLF, _TEXT_PART % b"html", CRLF, rich,
        CRLF, mark, b"--", CRLF))
