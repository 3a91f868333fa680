"""Which partner service fits a referral, and why: pure rules and a score a coordinator can read.

Hard rules (all must pass): the service and its organization are active, it offers the need, it
serves the referral's school, the grade, has an open slot there, and the partner has not had this
referral before. Consent is checked before matching starts.

The score (0..1) orders the eligible ones:
    0.40 x language   1 if the service speaks the family's language, else 0
    0.20 x open       open slots / capacity at the school
    0.20 x acceptance (accepted + 1) / (answered + 2): a new partner starts at 0.5
    0.10 x speed      1 / (1 + mean hours to accept / 24); 0.5 without history
    0.10 x load       1 / (1 + referrals it holds now)
Ties go to the service id, so the same directory always gives the same answer.
"""

from dataclasses import dataclass, field

WEIGHTS = {"language": 0.40, "open": 0.20, "acceptance": 0.20, "speed": 0.10, "load": 0.10}


@dataclass(frozen=True)
class Request:
    """The referral as matching sees it."""

    district_id: str
    school_id: str
    need: str
    grade: int | None
    language: str | None
    tried_partners: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    """One service at one school, as the candidate query returns it."""

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

    @property
    def open(self) -> int:
        return max(0, self.capacity - self.reserved)


@dataclass(frozen=True)
class Candidate:
    row: Row
    score: float
    reasons: list[str] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)


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
    return failed


def score(request: Request, row: Row) -> tuple[float, dict[str, float], list[str]]:
    language = primary_language(request.language)
    speaks = f",{language}," in row.languages_key
    answered = row.accepted + row.declined
    acceptance = (row.accepted + 1) / (answered + 2)
    if row.accepted:
        hours = row.accept_seconds / row.accepted / 3600
        speed = 1 / (1 + hours / 24)
        speed_reason = f"accepts in {hours:.1f} h on average"
    else:
        speed, speed_reason = 0.5, "no acceptance yet (speed 0.5)"
    parts = {
        "language": 1.0 if speaks else 0.0,
        "open": row.open / row.capacity if row.capacity else 0.0,
        "acceptance": acceptance,
        "speed": speed,
        "load": 1 / (1 + row.active),
    }
    total = round(sum(WEIGHTS[k] * v for k, v in parts.items()), 4)
    reasons = [
        f"language {language} {'spoken' if speaks else 'not spoken'}",
        f"{row.open} of {row.capacity} slots open at {row.school_id}",
        f"accepted {row.accepted} of {answered} answered ({acceptance:.2f})",
        speed_reason,
        f"holds {row.active} referrals now",
        "score " + f"{total} = "
        + " + ".join(f"{WEIGHTS[k]:.2f} x {k} {v:.2f}" for k, v in parts.items()),
    ]
    return total, parts, reasons


def rank(request: Request, rows: list[Row]) -> list[Candidate]:
    """Eligible candidates, best first."""
    candidates = []
    for row in rows:
        if rule_failures(request, row):
            continue
        total, parts, scored = score(request, row)
        grade_rule = (
            "all grades" if not row.grades_key or request.grade is None
            else f"grade {request.grade} served"
        )
        passed = [f"need {request.need} offered", f"school {request.school_id} served",
                  grade_rule, "open slot", "consent given", "not tried before"]
        candidates.append(Candidate(row, total, [*passed, *scored], parts))
    candidates.sort(key=lambda c: (-c.score, c.row.service_id))
    return candidates
