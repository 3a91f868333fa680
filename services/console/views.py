"""What the pages derive from the APIs' answers (pure functions, no I/O): which actions a
referral's state allows, its match and why, its timeline in words."""

from typing import Any

from runtime.auth import Role

CLOSED = frozenset({"closed", "cancelled"})
MATCHED_PHASE = frozenset({"matched", "accepted", "family_contacted"})
URGENCY_ORDER = {"crisis": 0, "urgent": 1, "routine": 2}


def actions_for(referral: dict[str, Any], role: Role) -> frozenset[str]:
    """Only the actions the referral's state allows (the API still decides: a 409 is shown)."""
    status = referral["status"]
    if role == Role.partner:
        if status in MATCHED_PHASE and not referral.get("accepted_at"):
            return frozenset({"accept", "decline"})
        if status in MATCHED_PHASE:
            return frozenset({"in-service"})
        return frozenset()
    if status in CLOSED:
        return frozenset({"notes"})
    return frozenset({"consent", "notes", "cancel", "close"})


def latest_match(timeline: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last partner matched, with its score and the rules that passed."""
    for entry in reversed(timeline):
        if entry["event"] == "PartnerMatched":
            data = entry.get("data") or {}
            return {"at": entry["at"], "partner_name": data.get("partner_name"),
                    "partner_id": data.get("partner_id"), "score": data.get("score"),
                    "reasons": data.get("reasons") or [], "attempt": data.get("attempt")}
        if entry["event"] in ("ReferralDeclined", "NoPartnerAvailable"):
            return None  # the match before is no longer current
    return None


# Extra words for a timeline entry, from its data: reason codes and outcomes, never free text.
_DETAIL_KEYS = ("outcome", "reason", "consent", "partner_name", "channel", "kind")


def timeline_rows(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for entry in timeline:
        data = entry.get("data") or {}
        rows.append({"at": entry["at"], "event": entry["event"], "actor": entry["actor"],
                     "status": entry["status_after"],
                     "detail": [str(data[k]) for k in _DETAIL_KEYS if data.get(k)]})
    return rows
