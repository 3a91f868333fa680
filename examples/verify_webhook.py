"""Verify an Ensemble webhook: copy this function into your receiver (standard library only).

Every delivery is a POST whose body is one CloudEvent (structured JSON) and whose headers are

    Ensemble-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>
    Ensemble-Delivery-Id: <the same on every retry of this delivery: dedupe on it>
    Ensemble-Event-Id, Ensemble-Event-Type, Ensemble-Attempt

Verify the signature over the raw body bytes (before any JSON parsing), reject timestamps
older than a few minutes (a captured request cannot be replayed later), answer 2xx quickly and
process asynchronously. Anything else is retried with back-off and, after the last attempt,
kept in your endpoint's dead letters (GET /api/v1/webhooks/endpoints/{id}/dead-letters) until
you replay it.

    python examples/verify_webhook.py --secret whsec_... --port 9000

runs a small receiver that prints each verified event.
"""

import hashlib
import hmac
import time


def verify_signature(secret: str, header: str, body: bytes, tolerance: float = 300,
                     now: float | None = None) -> bool:
    """True if ``header`` (Ensemble-Signature) signs ``body`` with ``secret`` and its timestamp
    is within ``tolerance`` seconds of now. Several v1= values may be present while a secret
    is rotated: any match is enough."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    signed = f"{timestamp}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


def main() -> None:
    import argparse
    import json
    from http.server import BaseHTTPRequestHandler, HTTPServer

    parser = argparse.ArgumentParser(description="Print verified Ensemble webhook deliveries.")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    seen: set[str] = set()  # use your database in production: deliveries come at least once

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not verify_signature(args.secret, self.headers.get("Ensemble-Signature", ""), body):
                self.send_response(401)
                self.end_headers()
                return
            delivery = self.headers.get("Ensemble-Delivery-Id", "")
            if delivery not in seen:
                seen.add(delivery)
                event = json.loads(body)
                print(event["type"], event["id"], json.dumps(event["data"]), flush=True)
            self.send_response(204)
            self.end_headers()

    HTTPServer(("127.0.0.1", args.port), Receiver).serve_forever()


if __name__ == "__main__":
    main()
