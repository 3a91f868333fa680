"""SMS length by 3GPP TS 23.038 (GSM 03.38): encodings, units and concatenated segments."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifications.sms_segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    SmsLength,
    count_segments,
    is_gsm7,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SmsLength("GSM-7", 0, 0)),
        ("Hello", SmsLength("GSM-7", 5, 1)),
        ("a" * 160, SmsLength("GSM-7", 160, 1)),
        ("a" * 161, SmsLength("GSM-7", 161, 2)),
        ("a" * 306, SmsLength("GSM-7", 306, 2)),
        ("a" * 307, SmsLength("GSM-7", 307, 3)),
        ("a" * 459, SmsLength("GSM-7", 459, 3)),
        # extension characters take ESC + code
        ("{", SmsLength("GSM-7", 2, 1)),
        ("€", SmsLength("GSM-7", 2, 1)),
        ("{" * 80, SmsLength("GSM-7", 160, 1)),
        ("€" * 81, SmsLength("GSM-7", 162, 2)),
        ("a" * 158 + "[]", SmsLength("GSM-7", 162, 2)),
        # é, ñ, ü, à, Ç, Greek capitals are in the basic set; ê, á, ó are not
        ("é" * 160, SmsLength("GSM-7", 160, 1)),
        ("Señor Müller à Ça ΔΩ", SmsLength("GSM-7", 20, 1)),
        ("ê", SmsLength("UCS-2", 1, 1)),
        ("a" * 159 + "ê", SmsLength("UCS-2", 160, 3)),
        ("ê" * 70, SmsLength("UCS-2", 70, 1)),
        ("ê" * 71, SmsLength("UCS-2", 71, 2)),
        ("ê" * 134, SmsLength("UCS-2", 134, 2)),
        ("ê" * 135, SmsLength("UCS-2", 135, 3)),
        ("你好" * 35, SmsLength("UCS-2", 70, 1)),
        # astral emoji are surrogate pairs: 2 UTF-16 code units each
        ("😀", SmsLength("UCS-2", 2, 1)),
        ("😀" * 35, SmsLength("UCS-2", 70, 1)),
        ("😀" * 36, SmsLength("UCS-2", 72, 2)),
        ("❤", SmsLength("UCS-2", 1, 1)),  # U+2764 is in the BMP
        # the curly apostrophe that word processors insert forces UCS-2
        ("We\u2019ll", SmsLength("UCS-2", 5, 1)),
    ],
)
def test_known_lengths(text: str, expected: SmsLength) -> None:
    assert count_segments(text) == expected


def test_escape_pair_is_never_split_across_segments() -> None:
    # 306 septets would be 2 x 153, but the € (ESC + e) cannot straddle the boundary.
    text = "a" * 152 + "€" + "a" * 152
    assert count_segments(text) == SmsLength("GSM-7", 306, 3)


def test_surrogate_pair_is_never_split_across_segments() -> None:
    text = "ê" * 66 + "😀" + "ê" * 66
    assert count_segments(text) == SmsLength("UCS-2", 134, 3)


def test_alphabet_tables() -> None:
    assert len(GSM7_BASIC) == 127  # 128 codes minus ESC
    assert set("\f^{}\\[~]|€") == GSM7_EXTENSION
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert set("0123456789 ABCXYZ abcxyz@£$¥§¿¡\n\r") <= GSM7_BASIC
    assert "`" not in GSM7_BASIC and not is_gsm7("`")  # the backtick is not in GSM 03.38


MIXED = st.sampled_from(
    ["a", "Z", " ", "é", "ñ", "{", "€", "\n", "ê", "中", "😀", "\u0627"]
)  # \u0627: Arabic alef
TEXT = st.text(alphabet=MIXED, max_size=600) | st.text(max_size=300)


@given(TEXT, MIXED | st.characters())
def test_segments_and_units_never_decrease_when_text_grows(text: str, more: str) -> None:
    before, after = count_segments(text), count_segments(text + more)
    assert after.segments >= before.segments
    if after.encoding == before.encoding:
        assert after.units > before.units


@given(TEXT)
def test_segments_agree_with_the_per_part_capacity(text: str) -> None:
    length = count_segments(text)
    single, part = (160, 153) if length.encoding == "GSM-7" else (70, 67)
    assert length.encoding == ("GSM-7" if is_gsm7(text) else "UCS-2")
    if length.units == 0:
        assert length.segments == 0
    elif length.units <= single:
        assert length.segments == 1
    else:
        # a pair kept whole wastes at most one unit per part
        assert math.ceil(length.units / part) <= length.segments
        assert length.segments <= math.ceil(length.units / (part - 1))
    if length.encoding == "UCS-2":
        assert length.units == len(text.encode("utf-16-le")) // 2


def test_a_text_counted_again_is_the_same_length() -> None:
    # count_segments is cached (a batch's text is counted once); the answer is not shared state
    first = count_segments("Lincoln: Schools closed tomorrow - Reply STOP to opt out.")
    assert count_segments("Lincoln: Schools closed tomorrow - Reply STOP to opt out.") == first
    assert first.encoding == "GSM-7" and first.segments == 1
