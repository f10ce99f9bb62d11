"""Prometheus /metrics: a bearer token from the environment, and figures that match the database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from feeds.models import FeedEvent, HookRejection, Store
from orders.models import Alert, OrderSync, SyncAttempt

pytestmark = pytest.mark.django_db
TOKEN = "metrics-token-7f3c-never-logged"


@pytest.fixture
def token(settings) -> str:
    settings.HUB_METRICS_TOKEN = TOKEN
    return TOKEN


def _scrape(client: Client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain; version=")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.content.decode()) for sample in family.samples}


def _store(name: str, **fields: object) -> Store:
    return Store.objects.create(name=name, account=name, base_url="http://127.0.0.1:9", app_key="key",
                                app_token="token", **fields)


def test_without_a_configured_token_there_is_no_metrics_page(client, settings):
    settings.HUB_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


def test_a_missing_or_wrong_token_gets_401(client, token):
    for header in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": f"Basic {TOKEN}"},
                   {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}x"}):
        response = client.get("/metrics", **header)
        assert response.status_code == 401, header
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert b"hub_orders" not in response.content
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_the_figures_match_the_database(client, token):
    now = timezone.now()
    acme = _store("acme", last_pull_at=now - timedelta(seconds=30), last_dispatch_at=now - timedelta(seconds=90),
                  vtex_paused_until=now + timedelta(seconds=45))
    beta = _store("beta")  # never pulled: down, and no age metric
    states = ["new", "new", "needs_attention", "handling_started", "handling_started", "handling_started"]
    orders = [OrderSync.objects.create(store=acme, order_id=f"15000000000{i:02d}-01", state=state,
                                       next_attempt_at=now if state == "new" else None)
              for i, state in enumerate(states)]
    OrderSync.objects.create(store=beta, order_id="1600000000001-01", state="needs_attention")
    calls = [("get_order", "ok", 200, 40), ("start_handling", "retry", 429, 300), ("erp_send", "ok", 201, 3000),
             ("erp_send", "retry", None, 20000), ("erp_send", "info", None, None), ("event", "ok", None, None)]
    for step, outcome, status, ms in calls:
        SyncAttempt.objects.create(order=orders[0], step=step, outcome=outcome, http_status=status, duration_ms=ms)
    old = SyncAttempt.objects.create(order=orders[1], step="erp_send", outcome="ok", http_status=201, duration_ms=10)
    SyncAttempt.objects.filter(pk=old.pk).update(created_at=now - timedelta(hours=1))  # outside the window
    FeedEvent.objects.create(store=acme, event_id="e1", handle="h1", order_id="x", state="ready-for-handling",
                             payload={}, outcome="queued", current_change=now - timedelta(days=1))
    HookRejection.objects.create(store=acme, reason="wrong_token", count=7, last_at=now)
    HookRejection.objects.create(store=None, reason="unknown_store", count=2, last_at=now)
    Alert.objects.create(store=beta, kind="jobs", severity="critical", message="Down", first_at=now)

    got = _scrape(client)

    def value(name: str, **labels: str) -> float | None:
        return got.get((name, tuple(sorted(labels.items()))))

    for store in (acme, beta):
        for state, _ in OrderSync.State.choices:
            assert value("hub_orders", store=store.name, state=state) == OrderSync.objects.filter(
                store=store, state=state).count()
    assert value("hub_store_health", store="beta", status="down") == 1
    assert value("hub_store_health", store="beta", status="ok") == 0
    assert value("hub_store_health", store="acme", status="paused") == 1
    assert value("hub_backlog_orders", store="acme") == 2
    assert value("hub_backlog_events", store="acme") == 1 and value("hub_backlog_events", store="beta") == 0
    assert value("hub_oldest_uncommitted_event_age_seconds", store="acme") < 60
    assert 3 * 86400 - 60 < value("hub_retention_margin_seconds", store="acme") <= 3 * 86400
    assert 30 <= value("hub_last_pull_age_seconds", store="acme") < 60
    assert 90 <= value("hub_last_dispatch_age_seconds", store="acme") < 120
    assert value("hub_last_pull_age_seconds", store="beta") is None
    assert value("hub_vtex_paused", store="acme") == 1 and value("hub_vtex_paused", store="beta") == 0
    assert 0 < value("hub_vtex_pause_remaining_seconds", store="acme") <= 45
    # Calls of the window, by status; the "info" row and the event row are not calls, the old one is out.
    assert {labels: v for (name, labels), v in got.items() if name == "hub_calls"} == {
        (("status", "200"), ("step", "get_order"), ("store", "acme"), ("system", "vtex")): 1,
        (("status", "429"), ("step", "start_handling"), ("store", "acme"), ("system", "vtex")): 1,
        (("status", "201"), ("step", "erp_send"), ("store", "acme"), ("system", "erp")): 1,
        (("status", "error"), ("step", "erp_send"), ("store", "acme"), ("system", "erp")): 1,
    }
    assert value("hub_vtex_rate_limited", store="acme") == 1 and value("hub_vtex_rate_limited", store="beta") == 0
    vtex = {labels["le"]: v for (name, labels_), v in got.items() if name == "hub_call_duration_seconds_bucket"
            for labels in [dict(labels_)] if labels["system"] == "vtex"}
    assert (vtex["0.05"], vtex["0.25"], vtex["0.5"], vtex["+Inf"]) == (1, 1, 2, 2)
    erp = {dict(labels)["le"]: v for (name, labels), v in got.items()
           if name == "hub_call_duration_seconds_bucket" and dict(labels)["system"] == "erp"}
    assert (erp["2.5"], erp["5"], erp["10"], erp["20"], erp["+Inf"]) == (0, 1, 1, 2, 2)
    assert value("hub_call_duration_seconds_gsum", store="acme", system="erp") == pytest.approx(23.0)
    assert value("hub_hook_rejections_total", store="acme", reason="wrong_token") == 7
    assert value("hub_hook_rejections_total", store="unknown", reason="unknown_store") == 2
    assert value("hub_alerts_firing", store="beta", kind="jobs", severity="critical") == 1


def test_metrics_carry_no_order_ids_or_customer_data(client, token):
    store = _store("acme")
    order = OrderSync.objects.create(store=store, order_id="1700000000001-01", state="needs_attention",
                                     customer_email="ana.silva@example.com", last_error="ana.silva@example.com")
    SyncAttempt.objects.create(order=order, step="erp_send", outcome="failed", http_status=422, duration_ms=5,
                               message="ana.silva@example.com")

    body = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()

    assert "hub_orders" in body and "1700000000001" not in body and "ana.silva" not in body
