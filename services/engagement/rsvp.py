"""Reading an RSVP out of a family's free-text reply, in the languages we write in, and
recording the answer (from a reply or the signed link)."""

import re
import unicodedata
from datetime import datetime

from contracts.events import FamilyRsvped
from runtime.uow import UnitOfWork
from services.engagement.tables import Invitation

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


def record_rsvp(uow: UnitOfWork, invitation: Invitation, answer: str, via: str,
                at: datetime) -> None:
    """The latest answer counts; an unchanged answer is not announced again."""
    if invitation.response == answer:
        return
    invitation.response = answer
    invitation.responded_via = via
    invitation.responded_at = at
    uow.emit(FamilyRsvped(event_id=invitation.event_id, family_id=invitation.family_id,
                          response=answer, via=via),
             district=invitation.district_id, school=invitation.school_id,
             subject=invitation.event_id)
