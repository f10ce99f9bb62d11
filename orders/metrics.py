"""Prometheus `/metrics`: the dashboard's figures and the alerts' signals, read from the database at scrape time.

A collector that queries on each scrape, rather than counters kept in memory: the hub runs as several
processes (gunicorn workers, the job cluster, `sync`), and the database is the one place that sees them all.
VTEX and ERP calls are true counters: every process counts each call it makes (core.call_counts) and adds
its counts to CallCount every HUB_METRICS_FLUSH_SECONDS, so use them with rate()/increase(); the scrape
first flushes its own process. Labels are store names, states, operations, statuses and reasons: no order
ids, no customer data.
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime

from django.conf import settings
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from core.call_counts import BUCKETS_MS, KEY_COLUMNS, SUM_COLUMNS, call_counts_flush
from core.models import CallCount, Store
from feeds.models import HookRejection
from orders.dashboard import VERDICT_LABELS, StoreHealth, store_healths
from orders.models import Alert

SYSTEMS = {"vtex": "VTEX", "erp": "ERP"}


class HubCollector(Collector):
    """Every metric of the hub, computed from the database when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        healths = store_healths(now=now)
        yield from _store_metrics(healths)
        yield from _pause_metrics(now)
        yield from _call_metrics([health.name for health in healths])
        yield from _hook_rejections()
        yield from _alerts_firing()


def _store_metrics(healths: list[StoreHealth]) -> Iterator[Metric]:
    orders = GaugeMetricFamily("hub_orders", "Orders by sync state", labels=["store", "state"])
    health = GaugeMetricFamily("hub_store_health", "The store's health verdict (1 for the current one), as on "
                               "the dashboard and /healthz", labels=["store", "status"])
    pending = GaugeMetricFamily("hub_backlog_orders", "Orders with work left (due now or waiting out a backoff)",
                                labels=["store"])
    owed = GaugeMetricFamily("hub_backlog_events", "Stored feed events whose handle is not committed to VTEX yet",
                             labels=["store"])
    oldest = GaugeMetricFamily("hub_oldest_uncommitted_event_age_seconds",
                               "Age of the oldest uncommitted feed event (0 when there is none)", labels=["store"])
    margin = GaugeMetricFamily("hub_retention_margin_seconds", "Time left before VTEX's retention may drop the "
                               "oldest uncommitted event (only while there is one)", labels=["store"])
    pull = GaugeMetricFamily("hub_last_pull_age_seconds", "Seconds since the last successful feed read "
                             "(absent: never)", labels=["store"])
    dispatch = GaugeMetricFamily("hub_last_dispatch_age_seconds", "Seconds since the last finished dispatch run "
                                 "(absent: never)", labels=["store"])
    enabled = GaugeMetricFamily("hub_store_enabled", "1 when the jobs work this store", labels=["store"])
    for store in healths:
        for count in store.counts:
            orders.add_metric([store.name, count.state], count.count)
        for status in VERDICT_LABELS:
            health.add_metric([store.name, status], 1 if store.verdict.status == status else 0)
        pending.add_metric([store.name], store.backlog.pending_orders)
        owed.add_metric([store.name], store.backlog.uncommitted_events)
        oldest.add_metric([store.name], store.backlog.uncommitted_oldest_age or 0)
        if store.backlog.retention_margin is not None:
            margin.add_metric([store.name], store.backlog.retention_margin)
        if store.pull.age_seconds is not None:
            pull.add_metric([store.name], store.pull.age_seconds)
        if store.dispatch.age_seconds is not None:
            dispatch.add_metric([store.name], store.dispatch.age_seconds)
        enabled.add_metric([store.name], 1 if store.enabled else 0)
    yield from (orders, health, pending, owed, oldest, margin, pull, dispatch, enabled)


def _pause_metrics(now: datetime) -> Iterator[Metric]:
    paused = GaugeMetricFamily("hub_vtex_paused", "1 while the store is paused after VTEX answered 429",
                               labels=["store"])
    left = GaugeMetricFamily("hub_vtex_pause_remaining_seconds", "Seconds left of the 429 pause", labels=["store"])
    for name, until in Store.objects.values_list("name", "vtex_paused_until"):
        active = until is not None and until > now
        paused.add_metric([name], 1 if active else 0)
        left.add_metric([name], (until - now).total_seconds() if active else 0)
    yield from (paused, left)


def _call_metrics(stores: list[str]) -> Iterator[Metric]:
    """Every VTEX and ERP call of every process, from CallCount (counters since the table began)."""
    counters = {system: CounterMetricFamily(f"hub_{system}_calls", f"{name} calls by store, operation and HTTP "
                                            "status ('error': no answer)", labels=["store", "operation", "status"])
                for system, name in SYSTEMS.items()}
    latencies = {system: HistogramMetricFamily(f"hub_{system}_call_duration_seconds", f"Duration of the {name} "
                                               "calls, answered or not", labels=["store", "operation"])
                 for system, name in SYSTEMS.items()}
    limited = CounterMetricFamily("hub_vtex_rate_limited", "VTEX calls answered 429", labels=["store"])
    histograms: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0] * len(SUM_COLUMNS))
    rate_limited: dict[str, int] = defaultdict(int, dict.fromkeys(stores, 0))
    rows = CallCount.objects.filter(system__in=SYSTEMS).order_by(*KEY_COLUMNS).values_list(*KEY_COLUMNS, *SUM_COLUMNS)
    for system, store, operation, status, *sums in rows:
        counters[system].add_metric([store, operation, status], sums[0])
        if system == "vtex" and status == "429":
            rate_limited[store] += sums[0]
        totals = histograms[(system, store, operation)]  # all statuses together: the latency of the endpoint
        for i, value in enumerate(sums):
            totals[i] += value
    for (system, store, operation), (count, total_ms, *buckets) in sorted(histograms.items()):
        bounds = [(f"{ms / 1000:g}", n) for ms, n in zip(BUCKETS_MS, buckets, strict=True)]
        latencies[system].add_metric([store, operation], [*bounds, ("+Inf", count)], sum_value=total_ms / 1000)
    for store, n in sorted(rate_limited.items()):
        limited.add_metric([store], n)
    yield from (*counters.values(), *latencies.values(), limited)


def _hook_rejections() -> Iterator[Metric]:
    rejections = CounterMetricFamily("hub_hook_rejections", "Order hook calls refused, by reason (store "
                                     "'unknown': a store name the hub does not know)", labels=["store", "reason"])
    for store, reason, count in HookRejection.objects.values_list("store__name", "reason", "count").order_by():
        rejections.add_metric([store or "unknown", reason], count)
    yield rejections


def _alerts_firing() -> Iterator[Metric]:
    firing = GaugeMetricFamily("hub_alerts_firing", "Alerts firing now (see the alert history in the admin)",
                               labels=["store", "kind", "severity"])
    rows = (Alert.objects.filter(state=Alert.State.FIRING).values_list("store__name", "kind", "severity")
            .annotate(n=Count("id")).order_by())
    for store, kind, severity, n in rows:
        firing.add_metric([store, kind, severity], n)
    yield firing


def metrics_exposition() -> bytes:
    call_counts_flush()  # this process's latest calls; the other processes flush every few seconds
    registry = CollectorRegistry()
    registry.register(HubCollector())
    return generate_latest(registry)


def _authorized(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest: the time taken must not tell how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus scrapes with `Authorization: Bearer HUB_METRICS_TOKEN`; without a token set, there is no page."""
    token = getattr(settings, "HUB_METRICS_TOKEN", "")
    if not token:
        raise Http404("metrics are not enabled")
    if not _authorized(request, token):
        response = HttpResponse("a valid bearer token is required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE_LATEST)
