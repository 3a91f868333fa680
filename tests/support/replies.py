"""A family answering the email it got: an inbound-mail relay posts the reply to notifications
(the loop counts a reply, not a sent message, as contact)."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import System


async def reply_by_email(system: "System", address: str, text: str) -> None:
    async def arrived() -> list[Any]:
        return system.inbox.to(address)

    [email] = await system.eventually(arrived, what=f"an email to {address}")
    reply = await system.http.post("/api/v1/email/inbound", json={
        "to": email["Reply-To"], "from": address, "text": text})
    assert reply.status_code == 200, reply.text


async def family_replies_by_email(system: "System", family: dict[str, Any], text: str) -> None:
    await reply_by_email(system, family["email"], text)
