"""Which partner service fits a referral, and why: pure rules and a score a coordinator can read.

Hard rules (all must pass): the service and its organization are active, it offers the need, it
serves the referral's school, the grade, has an open slot there, and the partner has not had this
referral before. Consent is checked before matching starts; when the family shares only inside
the school (consent ``in_school``), only the school's own supports are eligible.

The score (0..1) orders the eligible ones:
    0.40 x language   1 if the service speaks the family's language, else 0
    0.20 x open       open slots / capacity at the school
    0.20 x acceptance (accepted + 1) / (answered + 2): a new partner starts at 0.5
    0.10 x speed      1 / (1 + mean hours to accept / 24); 0.5 without history
    0.10 x load       1 / (1 + referrals it holds now)
Ties go to the service id, so the same directory always gives the same answer.

In-school supports (a school's own counselor, psychologist, nurse, social worker, registered with
``in_school_of``) are ranked like any partner, unless the district matches in-school first
(``match_in_school_first`` in the districts file, ``Request.in_school_first``): then every
eligible in-school support of the school comes before every outside partner, and the reasons
say which it was and why.

Ranking only computes numbers; the reasons (the rules passed and the score's parts, in words)
are written for a candidate when asked, which in practice is only for the one chosen.
"""

from dataclasses import dataclass
from typing import NamedTuple

WEIGHTS = {"language": 0.40, "open": 0.20, "acceptance": 0.20, "speed": 0.10, "load": 0.10}
W_LANGUAGE, W_OPEN, W_ACCEPTANCE, W_SPEED, W_LOAD = WEIGHTS.values()


@dataclass(frozen=True)
class Request:
    """The referral as matching sees it."""

    district_id: str
    school_id: str
    need: str
    grade: int | None
    language: str | None
    tried_partners: tuple[str, ...] = ()
    in_school_first: bool = False  # the district's match_in_school_first
    in_school_only: bool = False  # consent in_school: the family shares only inside the school


class Row(NamedTuple):
    """One service at one school, as the candidate query returns it (a tuple: cheap to make)."""

    service_id: str
    school_id: str
    capacity: int
    reserved: int
    partner_id: str
    partner_name: str
    need: str
    languages_key: str  # ",en,es,"
    grades_key: str  # ",0,1," or "" for every grade
    service_status: str = "active"
    partner_status: str = "active"
    accepted: int = 0
    declined: int = 0
    accept_seconds: float = 0.0
    active: int = 0
    in_school: bool = False  # the school's own staff support

    @property
    def open(self) -> int:
        return max(0, self.capacity - self.reserved)


def primary_language(tag: str | None) -> str:
    return (tag or "en").replace("_", "-").split("-")[0].lower()


def languages_key(languages: list[str]) -> str:
    codes = sorted({primary_language(lang) for lang in languages if lang})
    return f",{','.join(codes)}," if codes else ""


def grades_key(grades: list[int]) -> str:
    return f",{','.join(str(g) for g in sorted(set(grades)))}," if grades else ""


def grades_for_ages(min_age: int | None, max_age: int | None) -> list[int]:
    """Grades (-1 pre-K .. 12) whose usual ages (grade + 5 to grade + 6) overlap the range;
    empty (every grade) when the service names no ages or covers them all."""
    if min_age is None and max_age is None:
        return []
    low = min_age if min_age is not None else 0
    high = max_age if max_age is not None else 200
    grades = [g for g in range(-1, 13) if low <= g + 6 and high >= g + 5]
    return [] if len(grades) == 14 else grades or [99]  # 99: no school grade at all


def rule_failures(request: Request, row: Row) -> list[str]:
    """The hard rules this row breaks, by name; empty when it is eligible."""
    failed = []
    if row.service_status != "active":
        failed.append(f"service {row.service_status}")
    if row.partner_status != "active":
        failed.append(f"organization {row.partner_status}")
    if row.need != request.need:
        failed.append(f"need {row.need} is not {request.need}")
    if row.school_id != request.school_id:
        failed.append(f"school {request.school_id} not served")
    if row.grades_key and request.grade is not None and f",{request.grade}," not in row.grades_key:
        failed.append(f"grade {request.grade} not served")
    if row.open <= 0:
        failed.append("no open slot")
    if row.partner_id in request.tried_partners:
        failed.append("partner already had this referral")
    if request.in_school_only and not row.in_school:
        failed.append("outside the school (the family shares only inside it)")
    return failed


def _eligible(request: Request, grade: str | None, row: Row) -> bool:
    """rule_failures(request, row) == [], without writing any of the reasons."""
    return (row.service_status == "active" and row.partner_status == "active"
            and row.need == request.need and row.school_id == request.school_id
            and (grade is None or not row.grades_key or grade in row.grades_key)
            and row.capacity > row.reserved and row.partner_id not in request.tried_partners
            and (row.in_school or not request.in_school_only))


def parts(language: str, row: Row) -> tuple[float, float, float, float, float]:
    """The score's parts in WEIGHTS order; ``language`` is the ",es," form."""
    accepted = row.accepted
    return (
        1.0 if language in row.languages_key else 0.0,
        row.open / row.capacity if row.capacity else 0.0,
        (accepted + 1) / (accepted + row.declined + 2),
        1 / (1 + row.accept_seconds / accepted / 3600 / 24) if accepted else 0.5,
        1 / (1 + row.active),
    )


def total(p: tuple[float, float, float, float, float]) -> float:
    return round(W_LANGUAGE * p[0] + W_OPEN * p[1] + W_ACCEPTANCE * p[2] + W_SPEED * p[3]
                 + W_LOAD * p[4], 4)


def score(request: Request, row: Row) -> tuple[float, dict[str, float], list[str]]:
    """The score with its parts by name and the reasons a coordinator reads."""
    language = primary_language(request.language)
    p = parts(f",{language},", row)
    named = dict(zip(WEIGHTS, p, strict=True))
    points = total(p)
    answered = row.accepted + row.declined
    if row.accepted:
        speed_reason = f"accepts in {row.accept_seconds / row.accepted / 3600:.1f} h on average"
    else:
        speed_reason = "no acceptance yet (speed 0.5)"
    reasons = [
        f"language {language} {'spoken' if p[0] else 'not spoken'}",
        f"{row.open} of {row.capacity} slots open at {row.school_id}",
        f"accepted {row.accepted} of {answered} answered ({p[2]:.2f})",
        speed_reason,
        f"holds {row.active} referrals now",
        "score " + f"{points} = "
        + " + ".join(f"{WEIGHTS[k]:.2f} x {k} {v:.2f}" for k, v in named.items()),
    ]
    return points, named, reasons


@dataclass(frozen=True, slots=True)
class Candidate:
    """An eligible row and its score; ``reasons`` and ``parts`` are written on demand."""

    row: Row
    score: float
    request: Request

    @property
    def reasons(self) -> list[str]:
        request, row = self.request, self.row
        grade_rule = (
            "all grades" if not row.grades_key or request.grade is None
            else f"grade {request.grade} served"
        )
        passed = [f"need {request.need} offered", f"school {request.school_id} served",
                  grade_rule, "open slot", consent_reason(request), "not tried before"]
        return [*passed, *in_school_reasons(request, row), *score(request, row)[2]]

    @property
    def parts(self) -> dict[str, float]:
        return score(self.request, self.row)[1]


def consent_reason(request: Request) -> str:
    if request.in_school_only:
        return "consent given for the school's own supports only"
    return "consent given"


def in_school_reasons(request: Request, row: Row) -> list[str]:
    """Why an in-school support or an outside partner was chosen, in words; nothing when
    neither the row nor the district's setting makes it matter."""
    if request.in_school_only:
        return [f"in-school support of {request.school_id} (the family shares only inside "
                "the school)"]
    first = " (the district matches in-school supports first)" if request.in_school_first else ""
    if row.in_school:
        return [f"in-school support of {request.school_id}{first}"]
    if request.in_school_first:
        return [f"outside partner: no in-school support of {request.school_id} eligible "
                "(the district matches in-school supports first)"]
    return []


def order(candidate: Candidate) -> tuple[bool, float, str]:
    """The sort key of ``rank``: in-school first when the district says so, then the score,
    then the service id."""
    first = candidate.request.in_school_first and candidate.row.in_school
    return (not first, -candidate.score, candidate.row.service_id)


def rank(request: Request, rows: list[Row]) -> list[Candidate]:
    """Eligible candidates, best first."""
    language = f",{primary_language(request.language)},"
    grade = None if request.grade is None else f",{request.grade},"
    candidates = [Candidate(row, total(parts(language, row)), request)
                  for row in rows if _eligible(request, grade, row)]
    candidates.sort(key=order)
    return candidates
