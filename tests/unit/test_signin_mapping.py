"""The district file's sign-in section and the mapping of a person's claims to a role, schools
and partner (pure: no provider, no browser)."""

import tomllib
from pathlib import Path

import pytest
from support.signin import districts_toml

from runtime.auth import Principal, Role
from runtime.districts import Districts, DistrictsFileError, load_districts
from services.console.oidc import Flow, SignInFailed, map_claims

SECRET = "a-console-session-secret-for-tests-0123456789"


def _district():  # type: ignore[no-untyped-def]
    districts = Districts.model_validate(tomllib.loads(districts_toml("https://op.example")))
    district = districts.get("d001")
    assert district is not None
    provider = district.provider("test-op")
    assert provider is not None
    return district, provider


@pytest.mark.parametrize(("claims", "expected"), [
    ({"sub": "1", "email": "a@r.example", "groups": ["staff", "ensemble-admins",
                                                     "lincoln-coordinators"]},
     Principal("a@r.example", Role.district_admin, "d001")),  # the highest role wins
    ({"sub": "2", "email": "c@r.example", "groups": ["lincoln-coordinators"]},
     Principal("c@r.example", Role.coordinator, "d001", frozenset({"lincoln-es"}))),
    ({"sub": "3", "email": "P@SmileBright.Example"},  # domains are not case-sensitive
     Principal("P@SmileBright.Example", Role.partner, "d001", partner_id="p-smile")),
    ({"sub": "4", "email": "n@r.example", "groups": ["cafeteria"]}, None),
    ({"sub": "5", "email": "n@r.example", "groups": "ensemble-admins-not"}, None),
    ({"sub": "6"}, None),
])
def test_claims_map_to_a_principal_or_to_none(claims: dict[str, object],
                                              expected: Principal | None) -> None:
    district, provider = _district()
    assert map_claims(district, provider, claims) == expected


def test_a_coordinator_in_several_groups_covers_all_their_schools() -> None:
    district, provider = _district()
    extra = provider.roles[1].model_copy(update={"equals": "roosevelt-coordinators",
                                                 "schools": ["roosevelt-ms"]})
    provider = provider.model_copy(update={"roles": [*provider.roles, extra]})
    who = map_claims(district, provider, {"sub": "x", "email": "c@r.example",
                                          "groups": ["lincoln-coordinators",
                                                     "roosevelt-coordinators"]})
    assert who is not None and who.schools == {"lincoln-es", "roosevelt-ms"}


@pytest.mark.parametrize(("change", "message"), [
    (('schools = ["lincoln-es"]', 'schools = ["nowhere-es"]'), "not a school of d001"),
    (('partner_id = "p-smile"', ""), "a partner rule names its partner_id"),
    (('equals = "ensemble-admins"', 'equals = "x"\nends_with = "y"'), "exactly one of"),
    (('role = "district_admin"', 'role = "superuser"'), "role must be one of"),
    (('issuer = "https://op.example"', 'issuer = "http://op.example"'), "https://"),
])
def test_the_district_file_names_what_is_wrong_with_a_sign_in(
        tmp_path: Path, change: tuple[str, str], message: str) -> None:
    text = districts_toml("https://op.example").replace(*change)
    (tmp_path / "d.toml").write_text(text)
    with pytest.raises(DistrictsFileError, match=message) as found:
        load_districts(tmp_path / "d.toml")
    assert "district d001" in str(found.value) and "sign_in" in str(found.value)


def test_the_flow_cookie_is_signed_and_expires() -> None:
    flow = Flow.new("d001", "test-op", "/referrals")
    assert Flow.decode(SECRET, flow.encode(SECRET)) == flow
    for value in (None, "", flow.encode("another-secret-of-the-same-length-0123456"),
                  flow.encode(SECRET)[:-3] + "abc"):
        with pytest.raises(SignInFailed) as refused:
            Flow.decode(SECRET, value)
        assert refused.value.kind == "state"
    # Two flows never share a state, a nonce or a PKCE verifier.
    other = Flow.new("d001", "test-op", "/")
    assert {flow.state, flow.nonce, flow.verifier} & {other.state, other.nonce,
                                                      other.verifier} == set()
    assert len(flow.verifier) >= 43  # RFC 7636: 43 to 128 characters
