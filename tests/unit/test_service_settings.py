"""One configuration pattern: a service's own ENSEMBLE_* variables in its
``<Name>Settings(Settings)`` (services/<name>/settings.py), built from the shared settings with
``<Name>Settings.of``. The variables' names and defaults are the ones operators already set."""

from datetime import time
from pathlib import Path

import pytest

from runtime.settings import Settings
from services.engagement.settings import EngagementSettings
from services.notifications.settings import NotificationsSettings
from services.referrals.settings import ReferralsSettings
from services.webhooks.settings import WebhooksSettings


def own(kind: type[Settings]) -> dict[str, object]:
    """The service's own variables (beyond the shared ones) and their defaults."""
    return {field.alias: field.default for name, field in kind.model_fields.items()
            if name not in Settings.model_fields}


def test_the_variables_and_their_defaults_are_unchanged() -> None:
    assert own(EngagementSettings) == {
        "ENSEMBLE_OUTREACH_MAX_ATTEMPTS": 3,
        "ENSEMBLE_OUTREACH_REPLY_WAIT_SECONDS": 48 * 3600,
        "ENSEMBLE_BULK_CHUNK": 500,
        "ENSEMBLE_ENGAGEMENT_TIMER_SECONDS": 2.0,
    }
    assert own(NotificationsSettings) == {
        "ENSEMBLE_QUIET_HOURS_START": time(20, 0),
        "ENSEMBLE_QUIET_HOURS_END": time(8, 0),
        "ENSEMBLE_DAILY_MESSAGE_CAP": 4,
        "ENSEMBLE_DISPATCH_BATCH": 500,
        "ENSEMBLE_SMS_WINDOW": 50,
        "ENSEMBLE_SMTP_CONNECTIONS": 4,
        "ENSEMBLE_SEND_MAX_ATTEMPTS": 8,
        "ENSEMBLE_SEND_RETRY_BASE_SECONDS": 2.0,
        "ENSEMBLE_SEND_RETRY_MAX_SECONDS": 3600.0,
    }
    assert own(ReferralsSettings) == {
        "ENSEMBLE_FOLLOW_UP_SCAN_SECONDS": 30,
        "ENSEMBLE_REFERRAL_METRICS_SECONDS": 5,
        "ENSEMBLE_FAMILY_WAIT_SECONDS": 5,
    }
    assert "ENSEMBLE_WEBHOOKS_MAX_ATTEMPTS" in own(WebhooksSettings)
    # A service's own variables are its alone: none is also a shared field.
    for kind in (EngagementSettings, NotificationsSettings, ReferralsSettings):
        assert not set(own(kind)) & {f.alias for f in Settings.model_fields.values()}


def test_a_service_reads_its_own_from_the_environment_and_keeps_the_shared_ones(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENSEMBLE_OUTREACH_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("ENSEMBLE_QUIET_HOURS_START", "21:30")
    monkeypatch.setenv("ENSEMBLE_SEND_RETRY_BASE_SECONDS", "7")
    shared = Settings(data_dir=tmp_path, retry_base_seconds=0.25)
    engagement = EngagementSettings.of(shared)
    notifications = NotificationsSettings.of(shared, daily_message_cap=9)
    assert (engagement.outreach_max_attempts, engagement.data_dir) == (5, tmp_path)
    assert (notifications.quiet_hours_start, notifications.daily_message_cap) == (time(21, 30), 9)
    # The consumer's retry (shared) and a send's retry (notifications') are two settings.
    assert (notifications.retry_base_seconds, notifications.send_retry_base_seconds) == (0.25, 7)
    assert EngagementSettings.of(engagement) is engagement  # already the service's own


def test_a_bad_value_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENSEMBLE_BULK_CHUNK", "0")
    with pytest.raises(ValueError, match="ENSEMBLE_BULK_CHUNK"):
        EngagementSettings.of(Settings())


def test_each_service_is_built_with_its_own_settings_from_the_shared_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from services.engagement.service import build as build_engagement
    from services.notifications.service import build as build_notifications
    from services.referrals.service import build as build_referrals

    monkeypatch.setenv("ENSEMBLE_FAMILY_WAIT_SECONDS", "1.5")
    monkeypatch.setenv("ENSEMBLE_BULK_CHUNK", "250")
    monkeypatch.setenv("ENSEMBLE_DISPATCH_BATCH", "40")
    shared = Settings()
    referrals = build_referrals(shared)
    assert referrals.deps.desk.family_wait_seconds == 1.5
    assert isinstance(referrals.runtime.settings, ReferralsSettings)
    assert build_engagement(shared).deps.settings.bulk_chunk == 250
    notifications = build_notifications(shared)
    assert notifications.dispatcher.settings.dispatch_batch == 40  # type: ignore[attr-defined]
    given = ReferralsSettings(family_wait_seconds=0.5)  # a test's, or an operator's own
    assert build_referrals(given).runtime.settings is given
