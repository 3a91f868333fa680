"""SMS length in encoding units and segments (3GPP TS 23.038, formerly GSM 03.38).

A message whose every character is in the GSM 7-bit default alphabet is sent as GSM-7: one
septet per basic character, two (ESC + code) per extension-table character; 160 septets fit a
single SMS, 153 per part once concatenated (the user data header takes 7). Anything else forces
UCS-2: UTF-16 code units, 70 single / 67 per part; characters outside the BMP (most emoji) take a
surrogate pair. Parts are packed greedily without splitting an escape sequence or a surrogate
pair across two parts, as phones and providers do, so a split can cost one more part than a plain
ceiling division.
"""

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

# Basic character set, code points 0x00..0x7F except 0x1B (ESC), in table order.
GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"  # 0x1B (ESC) sits between Ξ and Æ
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# Extension table (reached through ESC): form feed, ^ { } \ [ ~ ] | and the euro sign.
GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True)
class SmsLength:
    encoding: Encoding
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int  # 0 for an empty text


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _pack(widths: list[int], single: int, part: int) -> int:
    total = sum(widths)
    if total == 0:
        return 0
    if total <= single:
        return 1
    segments, used = 1, 0
    for width in widths:
        if used + width > part:  # never split an escape pair or a surrogate pair
            segments, used = segments + 1, 0
        used += width
    return segments


@lru_cache(maxsize=256)  # an announcement's text is the same for a whole language
def count_segments(text: str) -> SmsLength:
    if is_gsm7(text):
        widths = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return SmsLength("GSM-7", sum(widths), _pack(widths, GSM7_SINGLE, GSM7_PART))
    widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SmsLength("UCS-2", sum(widths), _pack(widths, UCS2_SINGLE, UCS2_PART))
