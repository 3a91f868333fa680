"""What an on-call engineer relies on: metrics that parse, health that tells the truth."""

from conftest import System
from prometheus_client.parser import text_string_to_metric_families
from test_loop import family_replies_by_email


async def test_metrics_parse_and_count_the_loop(system: System) -> None:
    await system.register_partner()
    family = await system.register_family()
    referral = await system.open_referral(family)
    await family_replies_by_email(system, family, "yes")
    await system.wait_status(referral["id"], "family_contacted")

    response = await system.http.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in ("ensemble_messages_consumed", "ensemble_messages_published",
                 "ensemble_handler_seconds", "ensemble_http_requests",
                 "ensemble_outbox_backlog", "ensemble_notifications"):
        assert name in families, name
    applied = [s for s in families["ensemble_messages_consumed"].samples
               if s.labels.get("result") == "applied" and s.name.endswith("_total")]
    assert {s.labels["service"] for s in applied} >= {"referrals", "partners", "engagement",
                                                      "notifications"}
    # Labels stay bounded: route templates, never ids.
    routes = {s.labels.get("route") for s in families["ensemble_http_requests"].samples}
    assert any(r and r.endswith("/referrals/{referral_id}") for r in routes)
    assert not any(referral["id"] in (r or "") for r in routes)
    assert family["email"] not in response.text


async def test_readiness_reports_each_dependency(system: System) -> None:
    ready = await system.http.get("/health/ready")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert set(checks) == {"referrals", "partners", "engagement", "notifications", "webhooks"}
    assert all(all(c.values()) for c in checks.values())
    assert (await system.http.get("/health/live")).json() == {"status": "alive"}


async def test_readiness_fails_when_nats_is_gone(system: System) -> None:
    rt = system.services["partners"].runtime
    await rt.broker.config.connection_state.connection.close()
    ready = await system.http.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["partners"]["nats"] is False
