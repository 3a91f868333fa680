"""Retention periods in the districts file: optional per kind (left out: kept, as before),
whole days of at least one; a mistake is one line naming the district and the field."""

from pathlib import Path

import pytest

from runtime.districts import DistrictsFileError, load_districts

DISTRICT = """
[[districts]]
id = "d001"
name = "Riverside"
timezone = "America/Los_Angeles"
{retention}
[[districts.schools]]
id = "lincoln-es"
name = "Lincoln"
"""


def write(tmp_path: Path, retention: str) -> Path:
    path = tmp_path / "districts.toml"
    path.write_text(DISTRICT.format(retention=retention))
    return path


def test_left_out_every_kind_is_kept(tmp_path: Path) -> None:
    [district] = load_districts(write(tmp_path, "")).districts
    assert district.retention.model_dump() == {
        "closed_referrals_days": None, "audit_days": None, "messages_days": None,
        "replies_days": None}


def test_periods_are_read_per_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "[districts.retention]\nclosed_referrals_days = 1095\n"
                           "messages_days = 365\n")
    [district] = load_districts(path).districts
    assert (district.retention.closed_referrals_days, district.retention.messages_days,
            district.retention.audit_days) == (1095, 365, None)


@pytest.mark.parametrize(("line", "said"), [
    ("messages_days = 0", "district d001: retention.messages_days: Input should be greater"),
    ("replies_days = \"a year\"", "district d001: retention.replies_days:"),
    ("message_days = 30", "district d001: retention.message_days: Extra inputs"),
])
def test_a_mistake_names_the_district_and_the_field(tmp_path: Path, line: str,
                                                    said: str) -> None:
    with pytest.raises(DistrictsFileError) as refused:
        load_districts(write(tmp_path, f"[districts.retention]\n{line}\n"))
    assert said in str(refused.value)
    assert "\n" not in str(refused.value)
