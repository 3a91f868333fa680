"""Which partner service fits a referral, and why. Pure rules and a score a coordinator can read."""

from dataclasses import dataclass, field

from services.partners.tables import Partner, PartnerService, ReferralRequest


@dataclass(frozen=True)
class Candidate:
    service: PartnerService
    partner: Partner
    score: float
    reasons: list[str] = field(default_factory=list)


def primary_language(tag: str | None) -> str:
    return (tag or "en").replace("_", "-").split("-")[0].lower()


def eligible(request: ReferralRequest, service: PartnerService, partner: Partner) -> list[str]:
    """The rules a service passes for this referral; empty if any rule fails."""
    if partner.status != "active" or service.district_id != request.district_id:
        return []
    if service.need != request.need:
        return []
    if request.school_id not in service.schools:
        return []
    if service.grades and request.grade is not None and request.grade not in service.grades:
        return []
    if service.capacity - service.reserved <= 0:
        return []
    if partner.id in request.tried_partners:
        return []
    grade_rule = "grade served" if service.grades else "all grades"
    return [f"need {request.need} offered", f"school {request.school_id} served", grade_rule,
            f"{service.capacity - service.reserved} of {service.capacity} slots open"]


def rank(
    request: ReferralRequest,
    services: list[tuple[PartnerService, Partner]],
    family_language: str | None,
) -> list[Candidate]:
    """Eligible candidates best first: language match, then free capacity; ties by id."""
    language = primary_language(family_language)
    candidates = []
    for service, partner in services:
        reasons = eligible(request, service, partner)
        if not reasons:
            continue
        speaks = language in {primary_language(lang) for lang in partner.languages}
        free = (service.capacity - service.reserved) / service.capacity
        score = round((0.6 if speaks else 0.0) + 0.4 * free, 4)
        reasons.append(f"language {language} {'spoken' if speaks else 'not spoken'}")
        reasons.append(f"score {score} = 0.6 x language + 0.4 x free share")
        candidates.append(Candidate(service, partner, score, reasons))
    candidates.sort(key=lambda c: (-c.score, c.service.id))
    return candidates
