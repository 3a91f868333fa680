"""Events as published by the running system are valid CloudEvents 1.0 that the `cloudevents`
SDK reads (its v1 HTTP/conversion API and its strict core API), also through the integrators'
example (examples/cloudevents_sdk.py), and match their committed schema models."""

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.formats.json import JSONFormat
from cloudevents.v1.conversion import to_dict
from cloudevents.v1.http import from_json
from conftest import System
from support.replies import reply_by_email
from support.streams import PUBLIC_STREAMS, read_stream

from contracts.envelope import CONTENT_TYPE, envelope_model
from contracts.events import event_class

EXTENSIONS = ("districtid", "correlationid")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load_example(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLE = _load_example("cloudevents_sdk")  # imports only with the SDK version that installs


async def test_published_envelopes_are_cloudevents(system: System) -> None:
    await system.register_partner()
    family = await system.register_family()
    referral = await system.open_referral(family)
    await reply_by_email(system, family["email"], "Yes, thank you")
    await system.wait_status(referral["id"], "family_contacted")
    closed = await system.http.post(f"/api/v1/referrals/{referral['id']}/close",
                                    json={"district_id": "d001", "outcome": "services_received"})
    assert closed.status_code == 200, closed.text

    js = system.services["referrals"].runtime.jetstream

    async def all_published() -> list | None:
        msgs = [m for s in PUBLIC_STREAMS for m in await read_stream(js, s)]
        types = {m.subject.rsplit(".", 2)[-2] + "." + m.subject.rsplit(".", 1)[-1] for m in msgs}
        return msgs if "referrals.closed" in types else None

    messages = await system.eventually(all_published, what="the referral's events published")
    by_type: dict[str, list[dict]] = {}
    for msg in messages:
        assert msg.headers and msg.headers["Content-Type"] == CONTENT_TYPE
        payload = json.loads(msg.data)

        # The SDK's v1 API (cloudevents.http.from_json in SDK 1.x, gone from SDK 2).
        legacy = from_json(msg.data)
        attributes = legacy.get_attributes()
        assert attributes["specversion"] == "1.0"
        assert attributes["id"] == payload["id"] == msg.headers["Nats-Msg-Id"]
        assert attributes["source"].startswith("/ensemble/")
        assert attributes["type"] == payload["type"]
        for name in EXTENSIONS:
            assert attributes[name] == payload[name]
        assert legacy.get_data() == payload["data"]
        assert to_dict(legacy)["data"] == payload["data"]

        # The strict core API: validates required attributes and extension names.
        core = JSONFormat().read(None, msg.data)
        assert core.get_id() == payload["id"]
        assert core.get_type() == payload["type"]
        assert core.get_source() == payload["source"]
        assert core.get_time() is not None
        assert core.get_extension("districtid") == "d001" == msg.subject.split(".")[1]
        assert core.get_extension("correlationid") == payload["correlationid"]
        structured = from_http_event(HTTPMessage(headers={"content-type": CONTENT_TYPE},
                                                 body=msg.data))
        assert structured.get_id() == payload["id"]

        # What the integrators' example does, from a stream and from a webhook delivery.
        assert EXAMPLE.from_nats(msg.data).get_data() == payload["data"]
        delivered = EXAMPLE.from_webhook({"Content-Type": CONTENT_TYPE}, msg.data)
        assert delivered.get_extension("districtid") == "d001"
        assert delivered.get_id() == payload["id"]

        # The event's own type and version, and the model its committed schema comes from.
        cls = event_class(payload["type"])
        assert cls is not None and not cls.internal
        assert msg.subject == f"ensemble.d001.{cls.domain}.{cls.name}"
        envelope_model(cls).model_validate(payload)
        by_type.setdefault(cls.name, []).append(payload)

    # The example as README runs it: replay_consumer.py's lines piped into it.
    lines = b"".join(msg.data + b"\n" for msg in messages)
    piped = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "cloudevents_sdk.py"), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await piped.communicate(lines)
    assert piped.returncode == 0, err.decode()
    printed = out.decode().splitlines()
    assert len(printed) == len(messages)
    assert all("district=d001" in line for line in printed)
    assert f"id={by_type['opened'][0]['id']}" in out.decode()

    [opened] = by_type["opened"]
    [matched] = by_type["matched"]
    assert opened["data"]["referral_id"] == referral["id"]
    assert matched["correlationid"] == opened["correlationid"]
    assert matched["causationid"] == opened["id"]
    assert opened["schoolid"] == "lincoln-es"
