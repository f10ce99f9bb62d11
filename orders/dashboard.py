"""The operations dashboard's figures, for every store at once: a fixed number of grouped queries, no HTML."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Min, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, TruncHour
from django.urls import reverse
from django.utils import timezone

from feeds.handles import events_owed, visibility_of
from feeds.models import FeedConfig, Store
from feeds.queue_status import queue_check_error
from orders.models import OrderSync, SyncAttempt

DEFAULT_RETENTION_SECONDS = 345_600  # VTEX's minimum, 4 days: what a store without a FeedConfig has
RETENTION_WARN_SECONDS = 24 * 3600
ERP_WINDOW = timedelta(minutes=15)
ERP_STEPS = (SyncAttempt.Step.ERP_SEND, SyncAttempt.Step.ERP_CANCEL)
# "info" rows on ERP steps record decisions (e.g. no cancel notice needed), not an exchange with the ERP.
ERP_EXCHANGES = (SyncAttempt.Outcome.OK, SyncAttempt.Outcome.RETRY, SyncAttempt.Outcome.FAILED)
FAILURES = (SyncAttempt.Outcome.RETRY, SyncAttempt.Outcome.FAILED)
HANDLED = Q(step=SyncAttempt.Step.START_HANDLING, outcome=SyncAttempt.Outcome.OK)
CHART_HOURS = 24


@dataclass(frozen=True)
class JobHealth:
    at: datetime | None
    age_seconds: float | None
    badge: str  # "ok", "late", "down" or "disabled"


@dataclass(frozen=True)
class StateCount:
    state: str
    label: str
    count: int
    url: str  # the order list filtered on this store and state
    alert: bool  # needs attention, and not zero


@dataclass(frozen=True)
class Backlog:
    pending_orders: int  # orders with work left (due now or waiting out a backoff)
    pending_oldest_age: float | None
    uncommitted_events: int  # stored, handle not committed to VTEX
    uncommitted_oldest_age: float | None
    retention_seconds: int
    retention_margin: float | None  # seconds before VTEX may drop the oldest of them
    margin_low: bool


@dataclass(frozen=True)
class QueueView:
    """VTEX's own count and age of the feed queue, as last fetched by the refresh_queue_status job."""

    quantity: int | None
    oldest_age_seconds: float | None
    checked_at: datetime | None
    checked_age_seconds: float | None
    error: str  # the last check failed with this


@dataclass(frozen=True)
class StoreHealth:
    store_id: int
    name: str
    enabled: bool
    pull: JobHealth
    dispatch: JobHealth
    feed_status: str
    feed_status_label: str
    feed_error: str
    paused_until: datetime | None  # set only while the pause lasts
    erp_last_outcome: str  # of the last ERP exchange of the last 15 minutes; "" when there was none
    erp_error: str  # its message when it failed
    counts: list[StateCount]
    backlog: Backlog
    queue: QueueView

    @property
    def erp_failing(self) -> bool:
        return self.erp_last_outcome not in ("", SyncAttempt.Outcome.OK)


@dataclass(frozen=True)
class Dashboard:
    now: datetime
    stores: list[StoreHealth]
    handled_per_hour: list[tuple[datetime, int]]  # oldest hour first, the current hour last
    failures_per_hour: list[tuple[datetime, int]]


def job_health(at: datetime | None, *, enabled: bool, now: datetime) -> JobHealth:
    """A dead man's switch: a job that has not succeeded for HUB_LATE/DOWN_AFTER_SECONDS is late, then down."""
    age = (now - at).total_seconds() if at else None
    if not enabled:
        badge = "disabled"
    elif age is None or age > settings.HUB_DOWN_AFTER_SECONDS:
        badge = "down"
    elif age > settings.HUB_LATE_AFTER_SECONDS:
        badge = "late"
    else:
        badge = "ok"
    return JobHealth(at=at, age_seconds=age, badge=badge)


def changelist_url(*, store_id: int, state: str, base: str | None = None) -> str:
    base = base or reverse("admin:orders_ordersync_changelist")
    return f"{base}?store__id__exact={store_id}&state__exact={state}"


def _age(now: datetime, moment: datetime | None) -> float | None:
    return max(0.0, (now - moment).total_seconds()) if moment else None


def _stores(now: datetime) -> list[Store]:
    """Stores with their FeedConfig and their last ERP exchange of the last 15 minutes (one query)."""
    last_erp = (SyncAttempt.objects.filter(order__store=OuterRef("pk"), step__in=ERP_STEPS, outcome__in=ERP_EXCHANGES,
                                           created_at__gte=now - ERP_WINDOW)
                .order_by("-created_at", "-id"))
    return list(Store.objects.select_related("feed_config").annotate(
        erp_outcome=Subquery(last_erp.values("outcome")[:1]),
        erp_message=Subquery(last_erp.values("message")[:1]),
    ))


def _state_counts() -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {}
    # order_by(): the model's default ordering would otherwise join the GROUP BY.
    for store_id, state, n in (OrderSync.objects.values_list("store_id", "state").annotate(n=Count("id"))
                               .order_by()):
        counts.setdefault(store_id, {})[state] = n
    return counts


def _pending_work() -> dict[int, dict]:
    rows = (OrderSync.objects.filter(next_attempt_at__isnull=False).values("store_id")
            .annotate(n=Count("id"), oldest=Min(Coalesce("first_event_at", "created_at"))).order_by())
    return {row["store_id"]: row for row in rows}


def _uncommitted_events(now: datetime, stores: list[Store]) -> dict[int, dict]:
    """Stored events VTEX may still hold uncommitted: the definition `sync` waits on (feeds.handles.events_owed).

    Counted until committed, or until the visibility timeout (plus a grace) has passed since they were stored:
    by then VTEX has shown the item again, and the repeat is stored as an event of its own.
    """
    visibility = {store.pk: visibility_of(_config_of(store)) for store in stores}
    rows = (events_owed(visibility=visibility, now=now)
            .values("store_id")
            .annotate(n=Count("id"), oldest=Min("received_at"),
                      oldest_change=Min(Coalesce("current_change", "received_at")))
            .order_by())
    return {row["store_id"]: row for row in rows}


def hourly_activity(now: datetime) -> tuple[list[tuple[datetime, int]], list[tuple[datetime, int]]]:
    """Orders handled (distinct orders with a successful start-handling) and failed tries, per hour, in one query."""
    current = timezone.localtime(now).replace(minute=0, second=0, microsecond=0)
    hours = [current - timedelta(hours=n) for n in range(CHART_HOURS - 1, -1, -1)]
    rows = (SyncAttempt.objects.filter(Q(created_at__gte=hours[0]), HANDLED | Q(outcome__in=FAILURES))
            .annotate(hour=TruncHour("created_at")).values("hour")
            .annotate(handled=Count("order", distinct=True, filter=HANDLED),
                      failures=Count("id", filter=Q(outcome__in=FAILURES)))
            .order_by())
    by_hour = {row["hour"]: row for row in rows}
    handled = [(hour, by_hour[hour]["handled"] if hour in by_hour else 0) for hour in hours]
    failures = [(hour, by_hour[hour]["failures"] if hour in by_hour else 0) for hour in hours]
    return handled, failures


def _config_of(store: Store) -> FeedConfig | None:
    try:
        return store.feed_config  # fetched by select_related: no query
    except FeedConfig.DoesNotExist:
        return None


def _backlog(now: datetime, pending: dict | None, events: dict | None, config: FeedConfig | None) -> Backlog:
    retention = config.retention_seconds if config else DEFAULT_RETENTION_SECONDS
    margin = retention - _age(now, events["oldest_change"]) if events else None
    return Backlog(
        pending_orders=pending["n"] if pending else 0,
        pending_oldest_age=_age(now, pending["oldest"]) if pending else None,
        uncommitted_events=events["n"] if events else 0,
        uncommitted_oldest_age=_age(now, events["oldest"]) if events else None,
        retention_seconds=retention,
        retention_margin=margin,
        margin_low=margin is not None and margin < RETENTION_WARN_SECONDS,
    )


def _queue(now: datetime, config: FeedConfig | None) -> QueueView:
    if config is None:
        return QueueView(quantity=None, oldest_age_seconds=None, checked_at=None, checked_age_seconds=None, error="")
    return QueueView(quantity=config.vtex_quantity, oldest_age_seconds=config.vtex_oldest_age_seconds,
                     checked_at=config.vtex_checked_at, checked_age_seconds=_age(now, config.vtex_checked_at),
                     error=queue_check_error(config))


def dashboard_build(*, now: datetime | None = None) -> Dashboard:
    """Everything the dashboard shows, in five queries whatever the number of stores and orders."""
    now = now or timezone.now()
    stores = _stores(now)
    counts, pending, events = _state_counts(), _pending_work(), _uncommitted_events(now, stores)
    base = reverse("admin:orders_ordersync_changelist")
    healths = []
    for store in stores:
        config = _config_of(store)
        store_counts = counts.get(store.pk, {})
        healths.append(StoreHealth(
            store_id=store.pk, name=store.name, enabled=store.enabled,
            pull=job_health(store.last_pull_at, enabled=store.enabled, now=now),
            dispatch=job_health(store.last_dispatch_at, enabled=store.enabled, now=now),
            feed_status=store.feed_status, feed_status_label=store.get_feed_status_display(),
            feed_error=store.feed_error,
            paused_until=store.vtex_paused_until if store.vtex_paused_until and store.vtex_paused_until > now else None,
            erp_last_outcome=store.erp_outcome or "",
            erp_error=(store.erp_message or "")[:200] if store.erp_outcome in FAILURES else "",
            counts=[StateCount(state=state, label=label, count=store_counts.get(state, 0),
                               url=changelist_url(store_id=store.pk, state=state, base=base),
                               alert=state == OrderSync.State.NEEDS_ATTENTION and store_counts.get(state, 0) > 0)
                    for state, label in OrderSync.State.choices],
            backlog=_backlog(now, pending.get(store.pk), events.get(store.pk), config),
            queue=_queue(now, config),
        ))
    handled, failures = hourly_activity(now)
    return Dashboard(now=now, stores=healths, handled_per_hour=handled, failures_per_hour=failures)
