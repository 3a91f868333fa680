"""Reading an RSVP out of a family's free-text reply, in the languages we write in."""

import re
import unicodedata

YES = {"yes", "y", "si", "sí", "có", "co", "vâng", "是", "是的", "好", "会", "會", "نعم", "1",
       "ok", "okay", "sure", "claro", "attending", "going"}
NO = {"no", "n", "không", "khong", "不", "不会", "不會", "否", "لا", "2", "cannot", "can't"}


def parse_rsvp(text: str) -> str | None:
    """'yes', 'no' or None from the first word of a reply ("Sí, vamos" -> yes)."""
    cleaned = unicodedata.normalize("NFC", text).strip().lower()
    if not cleaned:
        return None
    first = re.split(r"[\s,.!;:\uff0c\u3002\uff01]+", cleaned, maxsplit=1)[0]
    if first in YES or cleaned in YES:
        return "yes"
    if first in NO or cleaned in NO:
        return "no"
    for word in sorted(YES | NO, key=len, reverse=True):  # scripts written without spaces
        if not word.isascii() and cleaned.startswith(word):
            return "yes" if word in YES else "no"
    return None
