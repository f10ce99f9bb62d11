"""Prometheus /metrics: a bearer token from the environment, and figures that match the database."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from core.models import Store
from core.vtex.client import VtexUnavailable
from core.vtex_account import vtex_client
from feeds.models import FeedEvent, HookRejection
from orders.cycle import sync_with_workers
from orders.erp import ORDER_READY, connector_for, idempotency_key
from orders.models import Alert, OrderSync, SyncAttempt
from sandbox.routing import match_route
from tests.feeds.test_call_counts import forget_earlier_calls
from tests.helpers import run_sync

# Transactional: the scrape flushes the call counts on a connection of its own, which must not wait for ours.
pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "metrics-token-7f3c-never-logged"
# The sandbox's route names that differ from the hub's operation labels (the others are the same).
OPERATIONS = {"order_list": "list_orders", "order_get": "get_order", "cancel": "cancel_order",
              "tracking": "invoice_update", "tracking_status": "tracking_update"}


@pytest.fixture
def token(settings) -> str:
    settings.HUB_METRICS_TOKEN = TOKEN
    return TOKEN


def _families(client: Client) -> list[Metric]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain; version=")
    return list(text_string_to_metric_families(response.content.decode()))


def _samples(families: list[Metric]) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in families for sample in family.samples}


def _scrape(client: Client) -> dict[tuple[str, tuple], float]:
    return _samples(_families(client))


def _calls(got: dict[tuple[str, tuple], float], name: str) -> Counter:
    """{(store, operation, status): count} of a calls counter."""
    calls: Counter = Counter()
    for (sample, labels), value in got.items():
        if sample == name:
            label = dict(labels)
            calls[(label["store"], label["operation"], label["status"])] = value
    return calls


def _histograms(families: list[Metric], name: str) -> dict[tuple[str, str], tuple[float, float]]:
    """{(store, operation): (count, sum)} of a histogram, after checking that each series is consistent."""
    [family] = [family for family in families if family.name == name]
    assert family.type == "histogram"
    series: dict[tuple[str, str], dict[str, float]] = {}
    for sample in family.samples:
        key = (sample.labels["store"], sample.labels["operation"])
        suffix = sample.name.removeprefix(name)
        series.setdefault(key, {})[sample.labels["le"] if suffix == "_bucket" else suffix] = sample.value
    found = {}
    for key, values in series.items():
        buckets = [values[le] for le in ("0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "20", "+Inf")]
        assert buckets == sorted(buckets), key  # cumulative: never decreasing
        assert values["+Inf"] == values["_count"], key
        found[key] = (values["_count"], values["_sum"])
    return found


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
    forget_earlier_calls()
    now = timezone.now()
    acme = _store("acme", last_pull_at=now - timedelta(seconds=30), last_dispatch_at=now - timedelta(seconds=90),
                  vtex_paused_until=now + timedelta(seconds=45))
    beta = _store("beta")  # never pulled: down, and no age metric
    states = ["new", "new", "needs_attention", "handling_started", "handling_started", "handling_started"]
    orders = [OrderSync.objects.create(store=acme, order_id=f"15000000000{i:02d}-01", state=state,
                                       next_attempt_at=now if state == "new" else None)
              for i, state in enumerate(states)]
    OrderSync.objects.create(store=beta, order_id="1600000000001-01", state="needs_attention")
    SyncAttempt.objects.create(order=orders[0], step="start_handling", outcome="retry", http_status=429,
                               duration_ms=300)  # the timeline is not where calls are counted
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
    # No call was made: no call series, but each store's 429 counter is there, at 0.
    assert value("hub_vtex_rate_limited_total", store="acme") == 0
    assert value("hub_vtex_rate_limited_total", store="beta") == 0
    assert not [name for name, _ in got if name.startswith(("hub_vtex_calls", "hub_erp_calls"))]
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


def test_each_vtex_and_erp_call_is_counted_by_operation_and_status_with_its_latency(client, token, sandbox, store):
    [order_id] = sandbox.create_orders(1)
    forget_earlier_calls()  # connecting the store called VTEX too
    vtex = vtex_client(store)
    items = vtex.feed_read()
    vtex.feed_commit([item.handle for item in items])
    vtex.order_get(order_id)
    vtex.order_start_handling(order_id)
    sandbox.fail_next("feed_read", 429)
    with pytest.raises(VtexUnavailable):
        vtex.feed_read()
    erp, key = connector_for(store.erp), idempotency_key(store_name="acme", order_id=order_id, event=ORDER_READY)
    sandbox.fail_next("erp", 503)
    # The ERP takes the order, then answers after 1.5 s: the store's ERP timeout is 1 s, so no answer.
    sandbox.fail_next("erp", "timeout", delay_seconds=1.5)
    for _ in range(4):  # 503, no answer, then 200 twice: the ERP already has the key
        erp.send(event=ORDER_READY, store_name="acme", order_id=order_id, order=sandbox.order(order_id),
                 idempotency_key=key)

    families = _families(client)  # no flush first: the scrape writes its own process's calls

    got = _samples(families)
    assert _calls(got, "hub_vtex_calls_total") == {
        ("acme", "feed_read", "200"): 1, ("acme", "feed_read", "429"): 1, ("acme", "feed_commit", "200"): 1,
        ("acme", "get_order", "200"): 1, ("acme", "start_handling", "204"): 1}
    assert _calls(got, "hub_erp_calls_total") == {
        ("acme", "erp_send", "503"): 1, ("acme", "erp_send", "error"): 1, ("acme", "erp_send", "200"): 2}
    assert got[("hub_vtex_rate_limited_total", (("store", "acme"),))] == 1
    vtex_latency = _histograms(families, "hub_vtex_call_duration_seconds")
    assert {key: count for key, (count, _) in vtex_latency.items()} == {
        ("acme", "feed_read"): 2, ("acme", "feed_commit"): 1, ("acme", "get_order"): 1, ("acme", "start_handling"): 1}
    [(count, seconds)] = _histograms(families, "hub_erp_call_duration_seconds").values()
    assert count == 4 and 1.0 <= seconds < 3.0  # the timed-out send waited 1 s
    erp_buckets = {s.labels["le"]: s.value for f in families for s in f.samples
                   if s.name == "hub_erp_call_duration_seconds_bucket"}
    assert erp_buckets["0.5"] == 3 and erp_buckets["2.5"] == 4


def test_the_counters_match_every_request_the_sandbox_received(client, token, sandbox, store):
    order_ids = sandbox.create_orders(3)
    forget_earlier_calls()
    seen = len(sandbox.requests)
    sandbox.fail_next("feed_read", 429)  # Retry-After 1 s: the store pauses, then reads on
    sandbox.fail_next("order_get", 503)
    sandbox.fail_next("erp", 503)

    run_sync()  # the real engine: pull and dispatch threads, retries

    families = _families(client)
    got = _samples(families)
    received = [(match_route(r.method, r.path), str(r.status)) for r in sandbox.requests[seen:]]
    assert _calls(got, "hub_vtex_calls_total") == Counter(
        ("acme", OPERATIONS.get(route.name, route.name), status) for route, status in received if route.kind == "vtex")
    assert _calls(got, "hub_erp_calls_total") == Counter(
        ("acme", "erp_send", status) for route, status in received if route.kind == "erp")
    assert _calls(got, "hub_erp_calls_total")[("acme", "erp_send", "201")] == len(order_ids)
    assert got[("hub_vtex_rate_limited_total", (("store", "acme"),))] == 1
    for name, counter in (("hub_vtex_call_duration_seconds", "hub_vtex_calls_total"),
                          ("hub_erp_call_duration_seconds", "hub_erp_calls_total")):
        by_operation: Counter = Counter()
        for (shop, operation, _), n in _calls(got, counter).items():
            by_operation[(shop, operation)] += n
        assert {key: count for key, (count, _) in _histograms(families, name).items()} == by_operation


def test_calls_of_forked_sync_workers_are_counted_once(client, token, sandbox, store):
    sandbox.create_orders(6)
    forget_earlier_calls()
    seen = len(sandbox.requests)

    result = sync_with_workers(workers=2, timeout=60)  # this process and a forked one share the work

    assert result.idle, result.summary()
    got = _scrape(client)
    received = [(match_route(r.method, r.path), str(r.status)) for r in sandbox.requests[seen:]]
    # The forked worker wrote its calls as it exited; the parent's were not copied into it.
    assert _calls(got, "hub_vtex_calls_total") == Counter(
        ("acme", OPERATIONS.get(route.name, route.name), status) for route, status in received if route.kind == "vtex")
    assert _calls(got, "hub_erp_calls_total") == Counter({("acme", "erp_send", "201"): 6})
