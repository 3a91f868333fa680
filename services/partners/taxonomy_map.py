"""From a directory's own classification to Ensemble's Need (contracts.taxonomy), in one place.

HSDS links a service to taxonomy terms (attributes -> taxonomy_terms). In order, the first that
decides wins:
1. a term of our own taxonomy ("ensemble-need", what an Ensemble export writes) or whose code is
   a Need value;
2. a 211/AIRS taxonomy code prefix (the taxonomy most 211 directories use);
3. keywords in the term names, then the service's name, then its description;
4. otherwise Need.other (the import reports it as a warning).
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

from contracts.taxonomy import Need

OWN_TAXONOMY = "ensemble-need"

# Longest prefix first. AIRS/211 LA codes: B basic needs, F legal, N employment, R mental health.
AIRS_PREFIXES: list[tuple[str, Need]] = sorted(
    [
        ("BD", Need.food),
        ("BH", Need.housing),
        ("BM-6500", Need.clothing),
        ("FT", Need.legal),
        ("ND", Need.employment),
        ("RP-1500", Need.crisis),
        ("R", Need.mental_health),
    ],
    key=lambda item: -len(item[0]),
)

KEYWORDS: list[tuple[Need, re.Pattern[str]]] = [
    (need, re.compile(pattern, re.IGNORECASE))
    for need, pattern in [
        (Need.crisis, r"\bcrisis\b|suicid|hotline"),
        (Need.dental, r"dental|dentist|teeth|oral health"),
        (Need.vision, r"\bvision\b|\beye|optometr|eyeglass|glasses"),
        (Need.mental_health, r"mental health|counsel|therap|behavioral health|psychiatr"),
        (Need.early_childhood, r"early childhood|preschool|pre-k|head start|child ?care|daycare"),
        (Need.after_school, r"after[- ]?school|out[- ]of[- ]school|summer camp|youth program"),
        (Need.tutoring, r"tutor|homework|literacy"),
        (Need.mentoring, r"mentor|big brothers|big sisters"),
        (Need.food, r"\bfood|meal|nutrition|pantry|\bsnap\b|\bwic\b|grocer"),
        (Need.housing, r"housing|shelter|homeless|\brent|evict"),
        (Need.clothing, r"cloth|uniform|shoes|\bcoats?\b"),
        (Need.legal, r"legal|immigration|attorney|lawyer"),
        (Need.employment, r"employment|\bjobs?\b|workforce|career"),
        (Need.medical, r"medical|clinic|health care|healthcare|primary care|immuniz|pediatric"),
    ]
]


@dataclass(frozen=True)
class Term:
    code: str = ""
    name: str = ""
    taxonomy: str = ""


def need_for(terms: Iterable[Term], name: str = "", description: str = "") -> tuple[Need, str]:
    """The need and how it was decided (for the import report and the coordinator)."""
    terms = list(terms)
    values = {n.value for n in Need}
    for term in terms:
        if term.code in values and term.taxonomy in (OWN_TAXONOMY, ""):
            return Need(term.code), f"taxonomy term {term.code}"
    for term in terms:
        code = term.code.upper()
        for prefix, need in AIRS_PREFIXES:
            if code.startswith(prefix):
                return need, f"211 taxonomy code {term.code}"
    for source, text in [*(("taxonomy term", t.name) for t in terms), ("service name", name),
                         ("description", description)]:
        for need, pattern in KEYWORDS:
            if text and pattern.search(text):
                return need, f"{source} mentions {pattern.search(text).group(0)!r}"  # type: ignore[union-attr]
    return Need.other, "no taxonomy term or keyword matched"
