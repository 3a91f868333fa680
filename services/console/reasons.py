"""Why a partner was chosen, in the reader's words and language.

Partners writes its reasons into PartnerMatched as English sentences with codes in them
("need mental_health offered", "school roosevelt-ms served"): that text is part of the public
contract, so it stays as it is for integrators. The console reads each sentence by its shape
and says it again with the need's and the school's names, in the reader's language. A sentence
of a shape not known here is shown as partners wrote it, never dropped.
"""

import re
from collections.abc import Callable

Say = Callable[..., str]  # gettext with named values (pages.render's `_`)

_IN_SCHOOL_FIRST = " (the district matches in-school supports first)"

# Each shape: partners' sentence (services/partners/matching.py) and the console's message.
# Named groups become the message's values; `need` and `school` are given as names.
SHAPES: list[tuple[re.Pattern[str], str]] = [(re.compile(pattern + r"\Z"), message) for
                                             pattern, message in [
    (r"need (?P<need>\S+) offered", "offers {need}"),
    (r"school (?P<school>\S+) served", "serves {school}"),
    (r"all grades", "serves all grades"),
    (r"grade (?P<grade>\S+) served", "serves grade {grade}"),
    (r"open slot", "has an open slot"),
    (r"consent given", "the family agreed to share the referral"),
    (r"consent given for the school's own supports only",
     "the family agreed to share the referral with the school's own supports only"),
    (r"not tried before", "not tried before for this referral"),
    (r"language (?P<language>\S+) spoken", "speaks the family's language ({language})"),
    (r"language (?P<language>\S+) not spoken",
     "does not speak the family's language ({language})"),
    (r"(?P<open>\d+) of (?P<capacity>\d+) slots open at (?P<school>\S+)",
     "{open} of {capacity} places open at {school}"),
    (r"accepted (?P<accepted>\d+) of (?P<answered>\d+) answered \((?P<part>[\d.]+)\)",
     "accepted {accepted} of the {answered} referrals it answered ({part})"),
    (r"accepts in (?P<hours>[\d.]+) h on average", "accepts in {hours} hours on average"),
    (r"no acceptance yet \(speed (?P<part>[\d.]+)\)", "has not accepted a referral yet ({part})"),
    (r"holds (?P<active>\d+) referrals now", "holds {active} referrals now"),
    (r"in-school support of (?P<school>\S+) \(the family shares only inside the school\)",
     "a support inside {school} (the family shares only inside the school)"),
    (r"in-school support of (?P<school>\S+)" + re.escape(_IN_SCHOOL_FIRST),
     "a support inside {school} (the district matches supports inside the school first)"),
    (r"in-school support of (?P<school>\S+)", "a support inside {school}"),
    (r"outside partner: no in-school support of (?P<school>\S+) eligible"
     + re.escape(_IN_SCHOOL_FIRST),
     "an outside partner: no support inside {school} could take it (the district matches "
     "supports inside the school first)"),
    (r"score (?P<total>[\d.]+) = (?P<terms>.+)", "score {total} = {terms}"),
]]

_TERM = re.compile(r"(?P<weight>[\d.]+) x (?P<part>\w+) (?P<value>[\d.]+)")
# The score's parts (partners' WEIGHTS) as messages of their own: "open" is a status elsewhere.
PARTS = {"language": "language spoken", "open": "places open", "acceptance": "acceptance",
         "speed": "speed", "load": "referrals held"}


def in_words(reason: str, _: Say, school_name: Callable[[str], str]) -> str:
    """The reason for the reader; as partners wrote it when its shape is not known here."""
    for shape, message in SHAPES:
        found = shape.match(reason)
        if found is None:
            continue
        values = found.groupdict()
        if "need" in values:
            values["need"] = _(values["need"])
        if "school" in values:
            values["school"] = school_name(values["school"])
        if "terms" in values:
            values["terms"] = _terms(values["terms"], _)
        return _(message, **values)
    return reason


def _terms(terms: str, _: Say) -> str:
    """"0.40 x language 1.00 + ..." with each part of the score named in the reader's words."""
    def term(m: re.Match[str]) -> str:
        part = PARTS.get(m["part"])
        return f"{m['weight']} x {_(part) if part else m['part']} {m['value']}"

    return _TERM.sub(term, terms)
