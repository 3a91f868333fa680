"""Webhook signatures: the service's signer and the integrators' copy (examples/) agree; a
tampered body, an old timestamp or another secret fails."""

import time

from examples.verify_webhook import verify_signature as integrator_verify
from services.webhooks.signing import sign, verify_signature

SECRET = "whsec_test_secret_0123456789"
BODY = b'{"specversion":"1.0","id":"e1","type":"org.ensemble.referrals.opened.v1"}'


def test_signature_verifies_with_both_copies() -> None:
    header = sign(SECRET, BODY)
    assert header.startswith("t=") and ",v1=" in header
    assert verify_signature(SECRET, header, BODY)
    assert integrator_verify(SECRET, header, BODY)


def test_tampered_body_fails() -> None:
    header = sign(SECRET, BODY)
    tampered = BODY.replace(b"e1", b"e2")
    assert not verify_signature(SECRET, header, tampered)
    assert not integrator_verify(SECRET, header, tampered)


def test_old_or_future_timestamp_fails() -> None:
    old = int(time.time()) - 301
    header = sign(SECRET, BODY, timestamp=old)
    assert not integrator_verify(SECRET, header, BODY, tolerance=300)
    assert integrator_verify(SECRET, header, BODY, tolerance=600)
    future = sign(SECRET, BODY, timestamp=int(time.time()) + 3600)
    assert not integrator_verify(SECRET, future, BODY)


def test_timestamp_is_signed() -> None:
    header = sign(SECRET, BODY, timestamp=1_700_000_000)
    moved = header.replace("t=1700000000", f"t={int(time.time())}")
    assert not integrator_verify(SECRET, moved, BODY)


def test_wrong_secret_or_garbage_fails() -> None:
    header = sign(SECRET, BODY)
    assert not integrator_verify("whsec_another_secret_000000", header, BODY)
    for garbage in ("", "v1=abc", "t=notanumber,v1=abc", f"t={int(time.time())}"):
        assert not integrator_verify(SECRET, garbage, BODY)


def test_any_of_several_signatures_during_rotation() -> None:
    t = int(time.time())
    old = sign("whsec_old_secret_0000000000", BODY, timestamp=t).split(",")[1]
    header = f"{sign(SECRET, BODY, timestamp=t)},{old}"
    assert integrator_verify(SECRET, header, BODY)
    assert integrator_verify("whsec_old_secret_0000000000", header, BODY)
