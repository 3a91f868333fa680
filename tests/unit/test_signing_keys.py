"""The console's signing keys and the services' check of them: ES256/RS256 tokens with a `kid`,
verified against a published JWKS; HS256 and `none` refused once a JWKS is configured; a key
rotated in is picked up at once (unknown `kid` -> fetch again); a retired key's tokens fail."""

import json
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from typer.testing import CliRunner

from ensemble.cli import app
from runtime.auth import Role, TokenVerifier, Unauthorized, issue_token
from runtime.keys import KeysError, PublicKeys, SigningKeys, new_key, write_jwks
from runtime.settings import DEV_JWT_SECRET

runner = CliRunner()


def _keys_file(tmp_path: Path, *algs: str) -> Path:
    path = tmp_path / "keys.json"
    write_jwks(path, {"keys": [new_key(alg) for alg in algs]})
    return path


def _public_file(tmp_path: Path, keys: SigningKeys) -> Path:
    public = tmp_path / "jwks.json"
    public.write_text(json.dumps(keys.public_jwks()))
    return public


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_a_console_token_is_verified_against_the_published_keys(tmp_path: Path,
                                                                      alg: str) -> None:
    keys = SigningKeys(_keys_file(tmp_path, alg))
    verifier = TokenVerifier(jwks=PublicKeys(str(_public_file(tmp_path, keys))))
    token = issue_token(keys, subject="ana", role="coordinator", district="d001",
                        schools=["lincoln-es"], ttl=timedelta(minutes=5))
    assert jwt.get_unverified_header(token)["kid"] == keys.active_kid
    assert jwt.get_unverified_header(token)["alg"] == alg
    who = await verifier.verify(token)
    assert (who.subject, who.role, who.schools) == ("ana", Role.coordinator, {"lincoln-es"})
    # The published file holds no private part.
    assert all("d" not in k for k in keys.public_jwks()["keys"])


async def test_shared_secret_none_expired_and_foreign_tokens_are_refused(tmp_path: Path) -> None:
    keys = SigningKeys(_keys_file(tmp_path, "ES256"))
    verifier = TokenVerifier(jwks=PublicKeys(str(_public_file(tmp_path, keys))))
    hs256 = issue_token(DEV_JWT_SECRET, subject="x", role="district_admin", district="d001")
    unsigned = jwt.encode({"sub": "x", "iss": "ensemble", "aud": "ensemble-api",
                           "role": "district_admin", "district": "d001", "exp": 2**33},
                          None, algorithm="none", headers={"kid": keys.active_kid})
    expired = issue_token(keys, subject="x", role="district_admin", district="d001",
                          ttl=timedelta(minutes=-5))
    (tmp_path / "other").mkdir()
    other = SigningKeys(_keys_file(tmp_path / "other", "ES256"))
    foreign = issue_token(other, subject="x", role="district_admin", district="d001")
    for token, why in ((hs256, "not accepted"), (unsigned, "not accepted"),
                       (expired, "Expired"), (foreign, "no published key"), ("junk", "JWS")):
        with pytest.raises(Unauthorized, match=why):
            await verifier.verify(token)


async def test_rotation_publishes_two_keys_and_retiring_one_ends_its_tokens(
        tmp_path: Path) -> None:
    path = _keys_file(tmp_path, "ES256")
    keys = SigningKeys(path)
    public = _public_file(tmp_path, keys)
    verifier = TokenVerifier(jwks=PublicKeys(str(public), min_refresh=0))
    old = issue_token(keys, subject="x", role="district_admin", district="d001")
    await verifier.verify(old)
    old_kid = keys.active_kid
    # Steps 1 and 2 at once: a new key first (signing), the old one still published.
    assert runner.invoke(app, ["keys", "new", str(path), "--activate"]).exit_code == 0
    assert keys.active_kid != old_kid  # the console reads the changed file without a restart
    assert [k["kid"] for k in keys.public_jwks()["keys"]][1] == old_kid
    public.write_text(json.dumps(keys.public_jwks()))
    new = issue_token(keys, subject="x", role="district_admin", district="d001")
    await verifier.verify(new)  # an unknown kid: the JWKS is fetched again
    await verifier.verify(old)  # both published during the rotation
    # Step 3: the old key retired; its tokens are refused once the JWKS is read again.
    refused = runner.invoke(app, ["keys", "retire", str(path), keys.active_kid])
    assert refused.exit_code == 2 and "active key" in refused.output
    assert runner.invoke(app, ["keys", "retire", str(path), old_kid]).exit_code == 0
    public.write_text(json.dumps(keys.public_jwks()))
    await verifier.jwks.refresh(forced=True)  # type: ignore[union-attr]
    with pytest.raises(Unauthorized, match="no published key"):
        await verifier.verify(old)
    await verifier.verify(new)
    listed = runner.invoke(app, ["keys", "list", str(path)]).output.split()
    assert listed == [keys.active_kid, "ES256", "active"]


def test_ensemble_token_signs_with_the_keys_file_when_set(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = _keys_file(tmp_path, "ES256")
    monkeypatch.setenv("ENSEMBLE_SIGNING_KEYS_FILE", str(path))
    done = runner.invoke(app, ["token", "--role", "district_admin", "--district", "d001"])
    assert done.exit_code == 0, done.output
    header = jwt.get_unverified_header(done.output.strip())
    assert header == {"typ": "JWT", "alg": "ES256", "kid": SigningKeys(path).active_kid}
    (tmp_path / "bad.json").write_text("{}")
    monkeypatch.setenv("ENSEMBLE_SIGNING_KEYS_FILE", str(tmp_path / "bad.json"))
    failed = runner.invoke(app, ["token", "--role", "district_admin", "--district", "d001"])
    assert failed.exit_code == 2 and "not a JWKS" in failed.output


def test_a_keys_file_with_a_public_or_symmetric_key_is_refused(tmp_path: Path) -> None:
    key = new_key("ES256")
    public = {k: v for k, v in key.items() if k != "d"}
    write_jwks(tmp_path / "pub.json", {"keys": [public]})
    with pytest.raises(KeysError, match="public"):
        SigningKeys(tmp_path / "pub.json")
    secret = {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "alg": "HS256",
              "kid": "s"}
    write_jwks(tmp_path / "hs.json", {"keys": [secret]})
    with pytest.raises(KeysError, match="alg"):
        SigningKeys(tmp_path / "hs.json")
    with pytest.raises(KeysError, match="unsupported"):
        new_key("HS256")
