"""Read Ensemble events with the CloudEvents Python SDK, version 2 (``pip install
'cloudevents>=2.2,<3'``).

SDK 2 moved its API: ``from cloudevents.http import from_json`` (SDK 1) no longer imports. The
SDK 1 API lives on as ``cloudevents.v1`` (``from cloudevents.v1.http import from_json``); the
new one is ``cloudevents.core``, used here. Both functions below return a ``BaseCloudEvent``
with ``get_id()``, ``get_type()``, ``get_time()``, ``get_extension("districtid")`` and
``get_data()``.

    python examples/replay_consumer.py --district d001 --idle 5 | python examples/cloudevents_sdk.py

reads the replayed events (one CloudEvent JSON per line) and prints one line per event.
"""

import sys
from collections.abc import Mapping

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.formats.json import JSONFormat


def from_nats(data: bytes | str) -> BaseCloudEvent:
    """A message of an Ensemble stream: its body is one structured-mode CloudEvent (JSON)."""
    return JSONFormat().read(None, data)


def from_webhook(headers: Mapping[str, str], body: bytes) -> BaseCloudEvent:
    """A webhook delivery (``Content-Type: application/cloudevents+json``). Verify its
    ``Ensemble-Signature`` on these raw bytes first (verify_webhook.py)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    return from_http_event(HTTPMessage(headers=lowered, body=body))


def describe(event: BaseCloudEvent) -> str:
    when = event.get_time()
    return (f"{when.isoformat() if when else '-'} {event.get_type()} id={event.get_id()} "
            f"district={event.get_extension('districtid')} subject={event.get_subject()}")


def main() -> None:
    for line in sys.stdin:
        if line.strip():
            print(describe(from_nats(line)), flush=True)


if __name__ == "__main__":
    main()
