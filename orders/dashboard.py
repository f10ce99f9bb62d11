"""The operations dashboard's figures, for every store at once: a fixed number of grouped queries, no HTML.

It also owns the hub's one story about a store's health (`store_verdict`, `stores_health`), the one text for
VTEX's queue figures (`queue_text`) and the one way to write a moment or an age (`when`, `age_text`): the
dashboard, the store and feed pages and /healthz all use these, so they cannot tell different stories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Exists, F, Min, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, TruncHour
from django.urls import reverse
from django.utils import timezone

from core.models import Store
from feeds.handles import events_owed, visibility_of
from feeds.models import FeedConfig, FeedEvent, HookRejection
from feeds.queue_status import queue_check_error
from feeds.services import feed_known_to_vtex
from orders.models import ErpRequest, OrderSync, SyncAttempt

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


QUEUE_SOURCE = "VTEX's approximate queue"
QUEUE_EXPLAINED = ("VTEX's own count of the messages in this store's feed, checked every 5 minutes and on each "
                   "Load from VTEX. It includes messages the hub has read but not committed yet, and VTEX's figures "
                   "are approximate: it can differ from the hub's backlog, which counts orders with work left and "
                   "stored events not yet committed.")


def queue_text(*, quantity: int | None, oldest_age_seconds: float | None, checked_age_seconds: float | None) -> str:
    """The one text for VTEX's queue figures: "28 messages (oldest 32 s old), checked 2 min ago"."""
    if checked_age_seconds is None:
        return "not checked yet"
    if quantity is None:
        figures = "no count from VTEX"
    elif quantity == 0:
        figures = "no messages"
    else:
        figures = f"{quantity} message{'' if quantity == 1 else 's'}"
        if oldest_age_seconds is not None:
            figures += f" (oldest {age_text(oldest_age_seconds)} old)"
    return f"{figures}, checked {age_text(checked_age_seconds)} ago"


@dataclass(frozen=True)
class QueueView:
    """VTEX's own count and age of the feed queue, as last checked (the refresh_queue_status job, Load from VTEX)."""

    quantity: int | None
    oldest_age_seconds: float | None
    checked_at: datetime | None
    checked_age_seconds: float | None
    error: str  # the last check failed with this (VTEX's words: mask before display)

    @property
    def text(self) -> str:
        return queue_text(quantity=self.quantity, oldest_age_seconds=self.oldest_age_seconds,
                          checked_age_seconds=self.checked_age_seconds)


@dataclass(frozen=True)
class Verdict:
    """One store's health in a word, and why. `cause` is the hub's own words (safe for /healthz, which has
    no login); `detail` quotes VTEX or the ERP and goes through personal_data masking before display."""

    status: str  # ok, late, failing, down, blocked, paused or disabled
    cause: str
    detail: str = ""

    @property
    def label(self) -> str:
        return VERDICT_LABELS[self.status]

    @property
    def healthy(self) -> bool:
        """Whether a monitor should stay quiet: ok, or late but not yet down, or switched off on purpose."""
        return self.status in ("ok", "late", "disabled")


VERDICT_LABELS = {"ok": "OK", "late": "Late", "failing": "Failing", "down": "Down", "blocked": "Blocked",
                  "paused": "Paused", "disabled": "Disabled"}


@dataclass(frozen=True)
class StoreVerdict:
    """What `stores_health` returns for each store: the verdict and the job ages it was derived from."""

    store_id: int
    name: str
    verdict: Verdict
    pull: JobHealth
    dispatch: JobHealth


@dataclass(frozen=True)
class ReturnCounts:
    """The return path of one store: what the ERP asked the hub to tell VTEX (invoices, tracking, cancels)."""

    waiting: int = 0  # stored, not yet accepted by VTEX
    refused: int = 0  # refused by VTEX, or given up after repeated failures: staff should look
    unconfirmed: int = 0  # VTEX accepted an invoice HUB_INVOICE_CONFIRM_MINUTES ago and the feed never said invoiced


@dataclass(frozen=True)
class StoreHealth:
    store_id: int
    name: str
    enabled: bool
    verdict: Verdict
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
    returns: ReturnCounts = field(default_factory=ReturnCounts)

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


def store_verdict(*, enabled: bool, pull: JobHealth, dispatch: JobHealth, feed_status: str, feed_error: str,
                  paused_until: datetime | None, erp_failing: bool, erp_error: str,
                  erp_breaker_until: datetime | None = None, erp_breaker_failures: int = 0) -> Verdict:
    """The one verdict, from every signal at once; the first rule that applies wins (worst or most telling first).

    Blocked and paused come before down: they say why nothing succeeds, and waiting will not fix a
    blocked store. A failing feed wins over a recent success: the success is history, the failure is now.
    """
    feed_failing = feed_status == Store.FeedStatus.FAILING
    if not enabled:
        return Verdict("disabled", "disabled: the jobs skip this store")
    if feed_status == Store.FeedStatus.NOT_CONFIGURED:
        return Verdict("blocked", "the feed is not configured on VTEX for this appKey: save the feed "
                                  "configuration to push it", feed_error)
    if feed_status == Store.FeedStatus.UNAUTHORIZED:
        return Verdict("blocked", "VTEX refused the app key or token (401/403): check the store's credentials",
                       feed_error)
    if paused_until is not None:
        return Verdict("paused", f"VTEX answered 429 (too many requests): no call before {when(paused_until)}")
    if erp_breaker_until is not None:
        return Verdict("paused", f"the ERP failed {erp_breaker_failures} times in a row (circuit breaker open): "
                                 f"orders wait, and it is tried again at {when(erp_breaker_until)}", erp_error)
    late = [name for name, job in (("pull", pull), ("dispatch", dispatch)) if job.badge in ("late", "down")]
    stale = "; ".join(_job_silence(name, job) for name, job in (("pull", pull), ("dispatch", dispatch))
                      if name in late)
    if pull.badge == "down" or dispatch.badge == "down":
        detail = feed_error if feed_failing else (erp_error if erp_failing else "")
        return Verdict("down", stale + ("; the last feed read failed" if feed_failing else ""), detail)
    if feed_failing:
        return Verdict("failing", "the last feed read failed" + (f" ({stale})" if stale else ""), feed_error)
    if erp_failing:
        return Verdict("failing", "the ERP's last answer was a failure" + (f" ({stale})" if stale else ""),
                       erp_error)
    if late:
        return Verdict("late", stale)
    return Verdict("ok", "pulls and dispatches are succeeding")


def _job_silence(name: str, job: JobHealth) -> str:
    what = "successful pull" if name == "pull" else "finished dispatch run"
    if job.age_seconds is None:
        return f"no {what} yet"
    return f"no {what} for {age_text(job.age_seconds)}"


def when(moment: datetime | None) -> str:
    """The hub's one way to write a moment: "2026-11-28 14:03:07 UTC" (the server's time zone, named)."""
    if moment is None:
        return "—"
    local = timezone.localtime(moment)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"


def age_text(seconds: float | None) -> str:
    """A duration for people: "45 s", "12 min", "3 h 5 min", "2 d 4 h" (the sign is the caller's business)."""
    if seconds is None:
        return "—"
    seconds = abs(int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def ago(moment: datetime | None, *, now: datetime | None = None) -> str:
    """ "3 min ago", or "never"."""
    if moment is None:
        return "never"
    return f"{age_text(_age(now or timezone.now(), moment))} ago"


def changelist_url(*, store_id: int, state: str, base: str | None = None) -> str:
    base = base or reverse("admin:orders_ordersync_changelist")
    return f"{base}?store__id__exact={store_id}&state__exact={state}"


def _age(now: datetime, moment: datetime | None) -> float | None:
    return max(0.0, (now - moment).total_seconds()) if moment else None


def health_annotate(stores: QuerySet, *, now: datetime) -> QuerySet:
    """Stores with their last ERP exchange of the last 15 minutes: all `verdict_of` needs, in the same query."""
    last_erp = (SyncAttempt.objects.filter(order__store=OuterRef("pk"), step__in=ERP_STEPS, outcome__in=ERP_EXCHANGES,
                                           created_at__gte=now - ERP_WINDOW)
                .order_by("-created_at", "-id"))
    return stores.annotate(
        erp_outcome=Subquery(last_erp.values("outcome")[:1]),
        erp_message=Subquery(last_erp.values("message")[:1]),
        erp_breaker_until=F("erp__breaker_open_until"),
        erp_breaker_failures=F("erp__breaker_failures"),
    )


def _erp_error(store: Store) -> str:
    return (store.erp_message or "")[:200] if store.erp_outcome in FAILURES else ""


def _jobs(store: Store, now: datetime) -> tuple[JobHealth, JobHealth]:
    return (job_health(store.last_pull_at, enabled=store.enabled, now=now),
            job_health(store.last_dispatch_at, enabled=store.enabled, now=now))


def _paused_until(store: Store, now: datetime) -> datetime | None:
    until = store.vtex_paused_until
    return until if until and until > now else None  # set only while the pause lasts


def verdict_of(store: Store, *, now: datetime) -> Verdict:
    """The verdict of a store loaded through `health_annotate`."""
    pull, dispatch = _jobs(store, now)
    return store_verdict(enabled=store.enabled, pull=pull, dispatch=dispatch, feed_status=store.feed_status,
                         feed_error=store.feed_error, paused_until=_paused_until(store, now),
                         erp_failing=store.erp_outcome not in (None, "", SyncAttempt.Outcome.OK),
                         erp_error=_erp_error(store), erp_breaker_until=_breaker_until(store, now),
                         erp_breaker_failures=store.erp_breaker_failures or 0)


def _breaker_until(store: Store, now: datetime) -> datetime | None:
    until = store.erp_breaker_until
    return until if until and until > now else None  # open only while it lasts


def stores_health(*, now: datetime | None = None) -> list[StoreVerdict]:
    """Every store's verdict, in one query (for /healthz and anything else that must agree with the dashboard)."""
    now = now or timezone.now()
    verdicts = []
    for store in health_annotate(Store.objects.order_by("name"), now=now):
        pull, dispatch = _jobs(store, now)
        verdicts.append(StoreVerdict(store_id=store.pk, name=store.name, verdict=verdict_of(store, now=now),
                                     pull=pull, dispatch=dispatch))
    return verdicts


def store_health(*, store_id: int, now: datetime | None = None) -> Verdict:
    """One store's verdict (one query)."""
    now = now or timezone.now()
    return verdict_of(health_annotate(Store.objects.filter(pk=store_id), now=now).get(), now=now)


def _stores(now: datetime) -> list[Store]:
    """Stores with their FeedConfig and their last ERP exchange of the last 15 minutes (one query)."""
    return list(health_annotate(Store.objects.select_related("feed_config"), now=now))


def return_counts(now: datetime) -> dict[int, ReturnCounts]:
    """Per store: ERP requests waiting, refused or failed, and fully invoiced orders whose invoices VTEX accepted
    over HUB_INVOICE_CONFIRM_MINUTES ago without the feed saying `invoiced` (partial invoices wait legitimately)."""
    State, Kind = ErpRequest.State, ErpRequest.Kind
    rows = (ErpRequest.objects.filter(state__in=[State.PENDING, State.REFUSED, State.FAILED])
            .values("order__store_id")
            .annotate(waiting=Count("id", filter=Q(state=State.PENDING)),
                      refused=Count("id", filter=Q(state__in=[State.REFUSED, State.FAILED])))
            .order_by())
    counts = {row["order__store_id"]: {"waiting": row["waiting"], "refused": row["refused"]} for row in rows}
    late = now - timedelta(minutes=float(settings.HUB_INVOICE_CONFIRM_MINUTES))
    outputs = ErpRequest.objects.filter(order=OuterRef("pk"), kind=Kind.INVOICE, invoice_type="Output")
    invoiced = (outputs.filter(state__in=[State.SENT, State.CONFIRMED]).values("order")
                .annotate(total=Sum("invoice_value")).values("total"))
    suspects = (OrderSync.objects.exclude(vtex_status="invoiced")
                .filter(Exists(outputs.filter(state=State.SENT, sent_at__lt=late)))
                .annotate(invoiced=Subquery(invoiced)).values_list("store_id", "order_snapshot__value", "invoiced"))
    for store_id, total, invoiced_value in suspects:
        if isinstance(total, (int, float)) and (invoiced_value or 0) >= total:
            counts.setdefault(store_id, {}).setdefault("unconfirmed", 0)
            counts[store_id]["unconfirmed"] += 1
    return {store_id: ReturnCounts(**values) for store_id, values in counts.items()}


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


def queue_view(config: FeedConfig | None, *, now: datetime | None = None) -> QueueView:
    """The queue figures every page shows: the last check stored on the FeedConfig (feeds.queue_status)."""
    now = now or timezone.now()
    if config is None:
        return QueueView(quantity=None, oldest_age_seconds=None, checked_at=None, checked_age_seconds=None, error="")
    return QueueView(quantity=config.vtex_quantity, oldest_age_seconds=config.vtex_oldest_age_seconds,
                     checked_at=config.vtex_checked_at, checked_age_seconds=_age(now, config.vtex_checked_at),
                     error=queue_check_error(config))


def dashboard_build(*, now: datetime | None = None) -> Dashboard:
    """Everything the dashboard shows, in seven queries whatever the number of stores and orders."""
    now = now or timezone.now()
    handled, failures = hourly_activity(now)
    return Dashboard(now=now, stores=store_healths(now=now), handled_per_hour=handled, failures_per_hour=failures)


def store_healths(*, now: datetime) -> list[StoreHealth]:
    """Every store's figures (verdict, job ages, counts, backlog, queue) in four queries: the dashboard's, and
    what orders.health_signals and orders.metrics read, so every outlet tells the same story."""
    stores = _stores(now)
    counts, pending, events = _state_counts(), _pending_work(), _uncommitted_events(now, stores)
    returns = return_counts(now)
    base = reverse("admin:orders_ordersync_changelist")
    healths = []
    for store in stores:
        config = _config_of(store)
        store_counts = counts.get(store.pk, {})
        pull, dispatch = _jobs(store, now)
        healths.append(StoreHealth(
            store_id=store.pk, name=store.name, enabled=store.enabled, verdict=verdict_of(store, now=now),
            pull=pull, dispatch=dispatch,
            feed_status=store.feed_status, feed_status_label=store.get_feed_status_display(),
            feed_error=store.feed_error,
            paused_until=_paused_until(store, now),
            erp_last_outcome=store.erp_outcome or "",
            erp_error=_erp_error(store),
            counts=[StateCount(state=state, label=label, count=store_counts.get(state, 0),
                               url=changelist_url(store_id=store.pk, state=state, base=base),
                               alert=state == OrderSync.State.NEEDS_ATTENTION and store_counts.get(state, 0) > 0)
                    for state, label in OrderSync.State.choices],
            backlog=_backlog(now, pending.get(store.pk), events.get(store.pk), config),
            queue=queue_view(config, now=now),
            returns=returns.get(store.pk, ReturnCounts()),
        ))
    return healths


# --- the order page -------------------------------------------------------------------------------
QUEUED_ACTIONS = ("retry", "start_handling", "resend")  # the staff actions whose work the job cluster does
REFRESH_SECONDS = 3
REFRESH_FOR_SECONDS = 60  # after this, stop refreshing and say the cluster may not be running


@dataclass(frozen=True)
class QueuedWork:
    """A staff action at the end of an order's timeline whose queued work has not shown on it yet."""

    label: str  # "Retry now"
    requested_at: datetime
    waited_seconds: float

    @property
    def refresh(self) -> bool:
        return self.waited_seconds < REFRESH_FOR_SECONDS


def order_queued_work(timeline: list[SyncAttempt], *, now: datetime | None = None) -> QueuedWork | None:
    """What the order page waits for: the last row is a queued staff request and nothing has happened since."""
    from orders.services.staff import ACTIONS  # staff imports the job machinery: only when an order page needs it

    if not timeline or timeline[-1].step != SyncAttempt.Step.STAFF:
        return None
    last = timeline[-1]
    for name in QUEUED_ACTIONS:
        label = ACTIONS[name].label
        if last.message.startswith(f"{label} requested by "):
            return QueuedWork(label=label, requested_at=last.created_at,
                              waited_seconds=_age(now or timezone.now(), last.created_at) or 0.0)
    return None


# --- which source delivered what, and VTEX's side of the configurations (issue 8) ----------------------
SOURCE_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class SourceCounts:
    """One store's events of the last 24 h by source, first sightings apart (duplicate_of empty)."""

    hook: int
    feed: int
    hook_first: int
    feed_first: int  # the feed saw these before the hook did, or the hook never did
    duplicates: int  # repeats of an event already stored, from either source


@dataclass(frozen=True)
class VtexSide:
    """Whether VTEX still has the hub's feed and hook configurations, as last seen, and hook refusals."""

    config_id: int | None  # the FeedConfig re-apply pushes; None: the store has none
    sources: SourceCounts
    rejections: list[tuple[str, int, datetime]]  # (reason label, count, last) since counting began
    feed: str  # "present", "missing", "removed" (VTEX had it) or "unknown" (not read yet)
    feed_retry_at: datetime | None  # while missing: the next read of the polling job
    hook: str  # "present", "missing", "unchecked" (pushed, not checked yet) or "unused"
    hook_checked_at: datetime | None
    last_event: str  # the newest line of the FeedConfig's VTEX-side timeline (quotes VTEX: mask it)


def vtex_side_build(*, now: datetime | None = None) -> dict[int, VtexSide]:
    """Per store, by id: sources, hook refusals and configurations on VTEX, in three queries whatever the size."""
    now = now or timezone.now()
    counts: dict[int, dict[str, dict[str, int]]] = {}
    rows = (FeedEvent.objects.filter(received_at__gte=now - SOURCE_WINDOW).values("store_id", "source")
            .annotate(n=Count("id"),
                      first=Count("id", filter=Q(duplicate_of__isnull=True) & ~Q(outcome=FeedEvent.Outcome.MALFORMED)),
                      repeats=Count("id", filter=Q(duplicate_of__isnull=False)))
            .order_by())
    for row in rows:
        counts.setdefault(row["store_id"], {})[row["source"]] = row
    rejections: dict[int, list[tuple[str, int, datetime]]] = {}
    for rejection in HookRejection.objects.filter(store__isnull=False).order_by("-count", "reason"):
        rejections.setdefault(rejection.store_id, []).append(
            (rejection.get_reason_display(), rejection.count, rejection.last_at))
    side = {}
    for store in Store.objects.select_related("feed_config"):
        config = _config_of(store)
        by_source = counts.get(store.pk, {})
        hook, feed = by_source.get(FeedEvent.Source.HOOK, {}), by_source.get(FeedEvent.Source.FEED, {})
        side[store.pk] = VtexSide(
            config_id=config.pk if config else None,
            sources=SourceCounts(hook=hook.get("n", 0), feed=feed.get("n", 0), hook_first=hook.get("first", 0),
                                 feed_first=feed.get("first", 0),
                                 duplicates=hook.get("repeats", 0) + feed.get("repeats", 0)),
            rejections=rejections.get(store.pk, []),
            feed=_feed_on_vtex(store, config, feed_known_to_vtex(last_pull_at=store.last_pull_at, config=config)),
            feed_retry_at=store.feed_retry_at if store.feed_retry_at and store.feed_retry_at > now else None,
            hook=hook_on_vtex(config),
            hook_checked_at=config.hook_checked_at if config else None,
            last_event=(config.vtex_log.split("\n", 1)[0] if config else ""),
        )
    return side


def _feed_on_vtex(store: Store, config: FeedConfig | None, known: bool) -> str:
    if store.feed_status == Store.FeedStatus.NOT_CONFIGURED:
        return "removed" if known else "missing"
    if store.feed_status == Store.FeedStatus.UNKNOWN:
        return "unknown"
    return "present" if store.last_pull_at else "unknown"


def hook_on_vtex(config: FeedConfig | None) -> str:
    """The hook as the hub last saw it: "present", "missing", "unchecked" (pushed, not checked yet) or "unused"."""
    if config is None or (config.hook_pushed_at is None and not config.hook_present):
        return "unused"
    if config.hook_present is None:
        return "unchecked"
    return "present" if config.hook_present else "missing"
