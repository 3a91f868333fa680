"""`ensemble demo`: a small sample district pushed through the loop, printed as it happens."""

import asyncio
import email
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

DISTRICT = "d001"
PARTNERS = [
    {"name": "Smile Bright Dental Clinic", "needs": ["dental"], "languages": ["en", "es"],
     "schools": ["lincoln-es", "roosevelt-ms"], "capacity": 2},
    {"name": "Bridges Youth Counseling", "needs": ["mental_health", "crisis"],
     "languages": ["en", "vi"], "schools": ["lincoln-es", "roosevelt-ms"], "capacity": 3},
    {"name": "Northside Tutoring Collective", "needs": ["tutoring", "mentoring"],
     "languages": ["en"], "schools": ["roosevelt-ms"], "capacity": 5},
]
FAMILIES = [
    {"school_id": "lincoln-es", "name": "Maria Garcia", "preferred_language": "es",
     "email": "garcia.family@example.org", "preferred_channel": "email"},
    {"school_id": "roosevelt-ms", "name": "Lan Nguyen", "preferred_language": "vi",
     "phone": "+1 (415) 555-0134", "email": "nguyen.family@example.org",
     "preferred_channel": "sms", "sms_consent": True},
    {"school_id": "roosevelt-ms", "name": "Sam Taylor", "preferred_language": "en",
     "email": "taylor.family@example.org", "preferred_channel": "email"},
]
REFERRALS = [  # (family index, student ref, need, urgency)
    (0, "stu-4821", "dental", "routine"),
    (1, "stu-5530", "mental_health", "urgent"),
    (2, "stu-6107", "vision", "routine"),  # no partner offers vision: the no-match path
]
DONE = {"family_contacted", "no_partner", "closed"}
# Left open at the end, so the console has a day's work to show: (family index, student ref,
# need, urgency, consent).
LEFT_OPEN = [
    (2, "stu-6240", "tutoring", "routine", "given"),
    (0, "stu-4822", "dental", "urgent", "given"),
    (1, "stu-5531", "crisis", "crisis", "pending"),  # waits for the family's consent
]


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {text}", flush=True)


REPLIES = {"es": "Sí, gracias. ¿Cuándo es la cita?", "vi": "Vâng, cảm ơn cô.",
           "en": "Yes please, thank you."}


async def run_demo(base_url: str, token: str, timeout: float = 60,
                   mail_dir: Path | None = None, sms_url: str | None = None) -> bool:
    """``mail_dir`` and ``sms_url`` (the local mailbox and dev SMS provider) let the sample
    families answer their messages; without them a coordinator logs a call instead."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"{base_url}/api/v1", timeout=10,
                                 headers=headers) as http:
        names = {}
        for partner in PARTNERS:
            made = (await http.post("/partners", json={"district_id": DISTRICT, **partner}))
            made.raise_for_status()
            names[made.json()["id"]] = partner["name"]
            say(f"partner registered: {partner['name']} ({', '.join(partner['needs'])})")
        families = []
        for family in FAMILIES:
            made = await http.post("/families", json={"district_id": DISTRICT, **family})
            made.raise_for_status()
            families.append(made.json())
            say(f"family registered at {family['school_id']}, speaks {family['preferred_language']}"
                f", prefers {family['preferred_channel']}")
        referrals = []
        for index, student, need, urgency in REFERRALS:
            body = {"district_id": DISTRICT, "school_id": families[index]["school_id"],
                    "student_ref": student, "family_id": families[index]["id"], "need": need,
                    "urgency": urgency, "consent": "given"}
            referrals.append(await _open(http, body))
            say(f"referral opened: {student} needs {need} ({urgency})")
        seen: dict[str, int] = {r: 0 for r in referrals}
        closed: set[str] = set()
        answered: set[str] = set()
        held: dict[str, datetime] = {}  # referral -> when its family's message may go
        family_of = {r: families[i] for r, (i, *_rest) in zip(referrals, REFERRALS, strict=True)}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {}
            for referral_id in referrals:
                detail = (await http.get(f"/referrals/{referral_id}",
                                         params={"district_id": DISTRICT})).json()
                for entry in detail["timeline"][seen[referral_id]:]:
                    say(f"  {detail['student_ref']}: {_describe(entry, names)}")
                seen[referral_id] = len(detail["timeline"])
                states[referral_id] = detail["status"]
                if detail["status"] == "matched" and referral_id not in answered:
                    family = family_of[referral_id]
                    outcome = await _answer(http, family, referral_id, mail_dir, sms_url)
                    if isinstance(outcome, datetime):
                        if referral_id not in held:
                            say(f"  {detail['student_ref']}: the message to the family is held "
                                f"for quiet hours until {_when(outcome)}")
                        held[referral_id] = outcome
                    elif outcome:
                        answered.add(referral_id)
                        held.pop(referral_id, None)
                if detail["status"] == "family_contacted" and referral_id not in closed:
                    closed.add(referral_id)
                    (await http.post(f"/referrals/{referral_id}/close", json={
                        "district_id": DISTRICT, "outcome": "services_received"})
                     ).raise_for_status()
            if all(s in ("closed", "no_partner") for s in states.values()):
                say("every referral reached its end: closed with an outcome, or flagged "
                    "for the coordinator because no partner offers the need")
                await _leave_open(http, families)
                return True
            waiting = {r for r, s in states.items() if s not in ("closed", "no_partner")}
            if waiting and waiting <= held.keys():
                break  # nothing will move before the families' morning: no use waiting
            await asyncio.sleep(0.3)
        if held:
            say(f"stopped: {len(held)} message(s) to families are held for quiet hours until "
                f"{_when(max(held.values()))}; the running system sends routine messages "
                "outside ENSEMBLE_QUIET_HOURS_START-_END in the school's time zone (20:00-08:00 "
                "unless set). Run the demo then, or start the system with both set to 00:00.")
        else:
            say("timed out waiting for the loop")
        return False


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite keeps no zone


def _when(moment: datetime) -> str:
    """A time the person at the terminal reads in their own zone, and in UTC."""
    local, utc = moment.astimezone(), moment.astimezone(UTC)
    if local.utcoffset() == utc.utcoffset():
        return f"{utc:%a %H:%M} UTC"
    return f"{local:%a %H:%M %Z} ({utc:%H:%M} UTC)"


async def _leave_open(http: httpx.AsyncClient, families: list[dict[str, Any]]) -> None:
    """A few referrals left open (matched, or waiting for consent) for the console's Today."""
    opened = []
    for index, student, need, urgency, consent in LEFT_OPEN:
        family = families[index]
        opened.append(await _open(http, {
            "district_id": DISTRICT, "school_id": family["school_id"], "student_ref": student,
            "family_id": family["id"], "need": need, "urgency": urgency, "consent": consent}))
    for _ in range(50):  # until partners has matched the ones with consent
        details = [(await http.get(f"/referrals/{r}", params={"district_id": DISTRICT})).json()
                   for r in opened]
        if all(d["status"] != "opened" or d["consent"] != "given" for d in details):
            break
        await asyncio.sleep(0.2)
    say(f"left open for the console: {', '.join(f'{d[1]} ({d[2]})' for d in LEFT_OPEN)}")


async def _answer(http: httpx.AsyncClient, family: dict[str, Any], referral_id: str,
                  mail_dir: Path | None, sms_url: str | None) -> bool | datetime:
    """Once the message is out, the family answers it (or a coordinator reaches them). While
    it is held for quiet hours, when it may go."""
    messages = (await http.get("/messages", params={"district_id": DISTRICT,
                                                    "referral_id": referral_id})).json()
    sent = [m for m in messages if m["status"] in ("sent", "delivered")]
    if not sent:
        quiet = [_utc(m["next_attempt_at"]) for m in messages
                 if m["held_reason"] == "quiet_hours" and m["next_attempt_at"]]
        return min(quiet) if quiet else False
    message = sent[0]
    reply = REPLIES.get(family["preferred_language"], REPLIES["en"])
    say(f"  message sent by {message['channel']} in {message['used_language']}")
    if message["channel"] == "sms" and sms_url:
        async with httpx.AsyncClient(timeout=10) as dev:
            answer = await dev.post(f"{sms_url}/_dev/inbound",
                                    data={"From": family["phone"], "Body": reply})
        if answer.status_code < 300:
            say(f"  the family texts back: {reply!r}")
            return True
    if message["channel"] == "email" and mail_dir and (box := mail_dir / "new").exists():
        for path in sorted(box.iterdir()):
            mail = email.message_from_bytes(path.read_bytes())
            if mail["To"] == family["email"] and mail["Reply-To"]:
                answer = await http.post("/email/inbound", json={
                    "to": mail["Reply-To"], "from": family["email"], "text": reply})
                if answer.status_code < 300:
                    say(f"  the family answers the email: {reply!r}")
                    return True
    await http.post(f"/families/{family['id']}/contacts", json={
        "district_id": DISTRICT, "kind": "phone_call", "outcome": "reached",
        "referral_id": referral_id, "by": "demo-coordinator"})
    say("  the coordinator calls the family and reaches them")
    return True


async def _open(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    # referrals learns of a new family through FamilyRegistered; wait for it briefly.
    for _ in range(100):
        response = await http.post("/referrals", json=body)
        if response.status_code in (200, 201):
            return str(response.json()["id"])
        if response.status_code != 409:
            response.raise_for_status()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"could not open referral: {response.text}")


def _describe(entry: dict[str, Any], names: dict[str, str]) -> str:
    data = entry["data"]
    match entry["event"]:
        case "ReferralOpened":
            return "ReferralOpened (committed with its event in one transaction)"
        case "PartnerMatched":
            reasons = "; ".join(data.get("reasons", [])[-2:])
            return f"PartnerMatched -> {data.get('partner_name')} ({reasons})"
        case "NoPartnerAvailable":
            return f"NoPartnerAvailable: {data.get('reason')}"
        case "FamilyContacted":
            return f"FamilyContacted by {data.get('kind')} (the family answered)"
        case "ReferralClosed":
            return f"ReferralClosed: {data.get('outcome')} (the partner's slot is released)"
        case other:
            return str(other)
