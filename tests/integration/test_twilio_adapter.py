"""Twilio request signatures, and the SMS client against the dev provider on real uvicorn."""

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from services.notifications.dev_sms import (
    DevSmsServer,
    create_dev_sms_app,
    read_dev_sms,
    run_dev_sms_server,
)
from services.notifications.errors import PermanentSendError, TransientSendError
from services.notifications.twilio import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TwilioSmsClient,
    compute_signature,
    validate_signature,
)

TOKEN = "dev-auth-token-0123456789abcdef"
SID = "AC" + "1" * 32
FROM = "+15005550006"
TO = "+15551230001"

# Published vectors from Twilio's helper library test suite (twilio/twilio-python,
# tests/unit/test_request_validator.py), the same example as Twilio's webhook-security docs.
TW_TOKEN = "12345"
TW_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TW_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}


# --- signatures ------------------------------------------------------------------------------


def test_published_signature_vector() -> None:
    assert compute_signature(TW_TOKEN, TW_URL, TW_PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert validate_signature(TW_TOKEN, TW_URL, TW_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


def test_published_vector_with_a_repeated_key_sorts_its_values() -> None:
    pairs = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert compute_signature(TW_TOKEN, TW_URL, pairs) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


@pytest.mark.parametrize(
    ("url", "signature"),
    [
        # Twilio signed without a port, a proxy shows one (https)
        ("https://mycompany.com:1234/myapp.php?foo=1&bar=2", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        # Twilio signed with the port
        ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
        # Twilio signed with the default port, the app sees none
        (TW_URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),
        ("http://mycompany.com/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4="),
    ],
)
def test_published_port_variants_validate(url: str, signature: str) -> None:
    assert validate_signature(TW_TOKEN, url, TW_PARAMS, signature)


def test_round_trip_with_unicode_and_empty_values() -> None:
    params = {"Body": "Hola, ¿cómo está? 你好 😀", "From": "+15551230001", "NumMedia": "", "A": "1"}
    url = "https://ensemble.example.org/api/v1/sms/inbound?district=d001"
    signature = compute_signature(TOKEN, url, params)
    assert validate_signature(TOKEN, url, params, signature)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url, params, sig: (url, {**params, "Body": "START"}, sig),
        lambda url, params, sig: (url, {**params, "Extra": "1"}, sig),
        lambda url, params, sig: (url, {k: v for k, v in params.items() if k != "From"}, sig),
        lambda url, params, sig: (url.replace("inbound", "status"), params, sig),
        lambda url, params, sig: (url.replace("d001", "d002"), params, sig),
        lambda url, params, sig: (url, params, sig[:-2] + "A="),
        lambda url, params, sig: (url, params, ""),
        lambda url, params, sig: (url, params, None),
    ],
)
def test_tampering_is_rejected(tamper: Any) -> None:
    url = "https://ensemble.example.org/api/v1/sms/inbound?district=d001"
    params = {"Body": "STOP", "From": "+15551230001", "To": FROM}
    signature = compute_signature(TOKEN, url, params)
    assert validate_signature(TOKEN, *tamper(url, params, signature)) is False
    assert validate_signature("another-token", url, params, signature) is False


# --- a receiving app standing in for the notifications service --------------------------------


def receiver_app() -> FastAPI:
    app = FastAPI()
    app.state.received = []
    app.state.arrived = asyncio.Event()

    @app.post("/sms/{hook}")
    async def hook(hook: str, request: Request) -> Response:
        form = await request.form()
        if not validate_signature(
            TOKEN, str(request.url), form, request.headers.get(SIGNATURE_HEADER)
        ):
            return Response(status_code=403)
        app.state.received.append((hook, dict(form), request.headers.get(IDEMPOTENCY_HEADER)))
        app.state.arrived.set()
        return Response(status_code=200)

    return app


@pytest.fixture
async def receiver() -> AsyncIterator[DevSmsServer]:
    async with DevSmsServer(receiver_app()) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "dev-sms.jsonl"


@pytest.fixture
async def provider(store: Path) -> AsyncIterator[DevSmsServer]:
    async with DevSmsServer(create_dev_sms_app(store, TOKEN, None)) as server:
        yield server


@pytest.fixture
async def client(provider: DevSmsServer) -> AsyncIterator[TwilioSmsClient]:
    async with TwilioSmsClient(provider.base_url, SID, TOKEN, FROM) as sms:
        yield sms


# --- the client against the dev provider -----------------------------------------------------


async def test_send_is_accepted_and_stored_readably(client: TwilioSmsClient, store: Path) -> None:
    body = "Chào Maria, tin vui từ Roosevelt! Nhắn STOP để hủy đăng ký."
    sid = await client.send(TO, body, "notification-1")
    assert sid.startswith("SM") and len(sid) == 34
    [record] = read_dev_sms(store)
    assert record["sid"] == sid
    assert (record["to"], record["from"], record["body"]) == (TO, FROM, body)
    assert record["idempotency_token"] == "notification-1"
    assert record["account_sid"] == SID and record["date"]
    assert (record["encoding"], record["num_segments"]) == ("UCS-2", 1)
    text = await asyncio.to_thread(store.read_text, encoding="utf-8")
    assert body in text  # not \u-escaped: a person can read it


async def test_same_idempotency_token_stores_once(client: TwilioSmsClient, store: Path) -> None:
    first = await client.send(TO, "Hello", "notification-2")
    again = await client.send(TO, "Hello", "notification-2")
    other = await client.send(TO, "Hello", "notification-3")
    assert first == again != other
    assert [r["sid"] for r in read_dev_sms(store)] == [first, other]


async def test_deduplication_survives_a_provider_restart(
    provider: DevSmsServer, client: TwilioSmsClient, store: Path
) -> None:
    first = await client.send(TO, "Hello", "notification-4")
    await provider.stop()
    async with (
        DevSmsServer(create_dev_sms_app(store, TOKEN, None)) as restarted,
        TwilioSmsClient(restarted.base_url, SID, TOKEN, FROM) as sms,
    ):
        assert await sms.send(TO, "Hello", "notification-4") == first
    assert len(read_dev_sms(store)) == 1


async def test_simulated_outage_is_transient(
    provider: DevSmsServer, client: TwilioSmsClient, store: Path
) -> None:
    provider.app.state.failing = "transient"
    with pytest.raises(TransientSendError) as caught:
        await client.send(TO, "Hello", "notification-5")
    assert caught.value.status == 503
    provider.app.state.failing = None
    assert await client.send(TO, "Hello", "notification-5")  # the retry goes through
    assert len(read_dev_sms(store)) == 1


async def test_simulated_rejection_is_permanent(
    provider: DevSmsServer, client: TwilioSmsClient, store: Path
) -> None:
    provider.app.state.failing = "permanent"
    with pytest.raises(PermanentSendError) as caught:
        await client.send(TO, "Hello", "notification-6")
    assert "21211" in caught.value.reason
    assert (caught.value.code, caught.value.status) == (21211, 400)
    assert TO not in caught.value.reason  # reasons go to logs and public events
    assert read_dev_sms(store) == []


async def test_invalid_number_is_rejected_permanently(client: TwilioSmsClient) -> None:
    with pytest.raises(PermanentSendError) as caught:
        await client.send("555-0100", "Hello", "notification-7")
    assert caught.value.code == 21211
    assert "555-0100" not in str(caught.value)


async def test_dev_provider_validates_like_twilio(provider: DevSmsServer, store: Path) -> None:
    url = f"{provider.base_url}/2010-04-01/Accounts/{SID}/Messages.json"
    async with httpx.AsyncClient(auth=(SID, TOKEN)) as http:
        no_from = await http.post(url, data={"To": TO, "Body": "Hi"})
        no_body = await http.post(url, data={"To": TO, "From": FROM})
        no_to = await http.post(url, data={"From": FROM, "Body": "Hi"})
        other_account = await http.post(
            url.replace(SID, "AC" + "2" * 32), data={"To": TO, "From": FROM, "Body": "Hi"}
        )
    assert [r.json()["code"] for r in (no_from, no_body, no_to)] == [21603, 21602, 21604]
    assert other_account.status_code == 401  # basic auth user must be the account in the path
    assert read_dev_sms(store) == []


async def test_wrong_credentials_are_rejected(provider: DevSmsServer) -> None:
    async with TwilioSmsClient(provider.base_url, SID, "wrong-token", FROM) as sms:
        with pytest.raises(PermanentSendError) as caught:
            await sms.send(TO, "Hello", "notification-8")
    assert (caught.value.code, caught.value.status) == (20003, 401)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_unreachable_provider_is_transient() -> None:
    port = free_port()  # nobody listens there
    async with TwilioSmsClient(f"http://127.0.0.1:{port}", SID, TOKEN, FROM) as sms:
        with pytest.raises(TransientSendError) as caught:
            await sms.send(TO, "Hello", "notification-9")
    assert caught.value.status is None and "network error" in caught.value.reason


def twilio_error_app() -> FastAPI:
    """Answers the way Twilio does in situations the dev provider does not simulate."""
    app = FastAPI()
    replies = {
        "ratelimited": JSONResponse(
            {"code": 20429, "message": "Too Many Requests", "status": 429},
            status_code=429,
            headers={"Retry-After": "7"},
        ),
        "broken": Response("<html>bad gateway</html>", status_code=502),
        "unsubscribed": JSONResponse(
            {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400},
            status_code=400,
        ),
        "nosid": JSONResponse({"status": "queued"}, status_code=201),
    }

    @app.post("/{case}/2010-04-01/Accounts/{sid}/Messages.json")
    async def create(case: str, sid: str, request: Request) -> Response:
        app.state.last_headers = dict(request.headers)
        app.state.last_form = dict(await request.form())
        return replies[case]

    return app


async def test_status_codes_map_to_retry_or_give_up() -> None:
    async with DevSmsServer(twilio_error_app()) as twilio:

        def client(case: str) -> TwilioSmsClient:
            return TwilioSmsClient(f"{twilio.base_url}/{case}", SID, TOKEN, FROM)

        async with client("ratelimited") as sms:
            with pytest.raises(TransientSendError) as limited:
                await sms.send(TO, "Hello", "k1")
        assert (limited.value.status, limited.value.code, limited.value.retry_after) == (
            429,
            20429,
            7.0,
        )
        async with client("broken") as sms:
            with pytest.raises(TransientSendError) as broken:
                await sms.send(TO, "Hello", "k2")
        assert broken.value.status == 502
        async with client("unsubscribed") as sms:
            with pytest.raises(PermanentSendError) as unsubscribed:
                await sms.send(TO, "Hello", "k3")
        assert unsubscribed.value.code == 21610 and "unsubscribed" in unsubscribed.value.reason
        async with client("nosid") as sms:
            with pytest.raises(TransientSendError):
                await sms.send(TO, "Hello", "k4")
        assert twilio.app.state.last_headers["i-twilio-idempotency-token"] == "k4"
        assert twilio.app.state.last_headers["authorization"].startswith("Basic ")
        assert twilio.app.state.last_form == {"To": TO, "From": FROM, "Body": "Hello"}


async def test_status_callback_is_signed_and_reports_delivery(
    provider: DevSmsServer, receiver: DevSmsServer
) -> None:
    callback = f"{receiver.base_url}/sms/status"
    async with TwilioSmsClient(provider.base_url, SID, TOKEN, FROM, callback) as sms:
        sid = await sms.send(TO, "Hello", "notification-10")
    await asyncio.wait_for(receiver.app.state.arrived.wait(), 5)  # sent after the reply
    [(hook, form, token)] = receiver.app.state.received
    assert hook == "status" and token
    assert form["MessageSid"] == sid and form["MessageStatus"] == "delivered"
    assert form["To"] == TO and form["AccountSid"] == SID


async def test_inbound_reply_reaches_the_webhook_with_a_valid_signature(
    provider: DevSmsServer, receiver: DevSmsServer
) -> None:
    provider.app.state.webhook_url = f"{receiver.base_url}/sms/inbound"
    async with httpx.AsyncClient(base_url=provider.base_url) as http:
        reply = await http.post("/_dev/inbound", data={"From": TO, "Body": "STOP"})
        assert reply.status_code == 200
        assert reply.json()["forwarded"] is True and reply.json()["webhook_status"] == 200
        as_json = await http.post("/_dev/inbound", json={"From": TO, "Body": "start"})
        assert as_json.json()["webhook_status"] == 200
    [(hook, form, token), (_, second, _)] = receiver.app.state.received
    assert hook == "inbound" and token
    assert (form["From"], form["Body"], form["To"]) == (TO, "STOP", "+15005550006")
    assert form["MessageSid"].startswith("SM") and form["NumMedia"] == "0"
    assert second["Body"] == "start"


async def test_receiver_refuses_a_forged_inbound(receiver: DevSmsServer) -> None:
    url = f"{receiver.base_url}/sms/inbound"
    params = {"From": TO, "Body": "STOP"}
    forged = compute_signature("not-the-token", url, params)
    async with httpx.AsyncClient() as http:
        response = await http.post(url, data=params, headers={SIGNATURE_HEADER: forged})
        unsigned = await http.post(url, data=params)
    assert (response.status_code, unsigned.status_code) == (403, 403)
    assert receiver.app.state.received == []


async def test_inbound_without_a_webhook_is_refused(provider: DevSmsServer) -> None:
    async with httpx.AsyncClient(base_url=provider.base_url) as http:
        reply = await http.post("/_dev/inbound", data={"From": TO, "Body": "STOP"})
    assert reply.status_code == 409


async def test_run_dev_sms_server_serves_until_cancelled(store: Path) -> None:
    port = free_port()
    task = asyncio.create_task(run_dev_sms_server("127.0.0.1", port, store, TOKEN))
    async with TwilioSmsClient(f"http://127.0.0.1:{port}", SID, TOKEN, FROM) as sms:
        for _ in range(200):  # until it listens
            try:
                sid = await sms.send(TO, "Hello", "notification-11")
                break
            except TransientSendError:
                await asyncio.sleep(0.02)
        else:
            pytest.fail("dev SMS server did not start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(TransientSendError):  # stopped: the port is closed again
            await sms.send(TO, "Hello", "notification-12")
    assert [r["sid"] for r in read_dev_sms(store)] == [sid]


async def test_a_busy_port_is_an_error_not_an_exit(provider: DevSmsServer, store: Path) -> None:
    with pytest.raises(OSError):
        await DevSmsServer(create_dev_sms_app(store, TOKEN), port=provider.port).start()
