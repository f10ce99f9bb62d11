"""Pruning the history that grows forever, never what an order still needs (docs/reliability.md, Retention).

Pruned once older than HUB_RETENTION_DAYS (90): feed events whose handle is committed (or that had none),
the timeline of orders that are settled, resolved alerts and failed job records. Kept whatever their age:
the orders themselves (OrderSync: reconciliation and a re-delivered event are told "already handled" by
them), events still owed to VTEX, events of orders with work left, parked or held, and the whole history
of any order active within the retention. Rows go 5,000 at a time, each batch its own short transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import Exists, F, Max, OuterRef, Q, QuerySet
from django.utils import timezone
from django_q.models import Failure

from core.models import Store
from core.retention import retention_days
from feeds.models import FeedConfig, FeedEvent
from orders.models import Alert, OrderSync, SyncAttempt

BATCH_SIZE = 5_000
FINISHED_STATES = (OrderSync.State.HANDLING_STARTED, OrderSync.State.CANCELED, OrderSync.State.RESOLVED)
# Without a FeedConfig row the hub's defaults apply (4 days' retention, 250 s visibility).
DEFAULT_REDELIVERY = timedelta(seconds=FeedConfig._meta.get_field("retention_seconds").default
                               + FeedConfig._meta.get_field("visibility_timeout_seconds").default)


@dataclass
class PruneReport:
    cutoff: datetime  # timeline rows, alerts and job records older than this go; orders quiet since then
    events_cutoff: datetime  # never later than `cutoff`, nor within VTEX's redelivery window
    dry_run: bool = False
    events: int = 0
    timeline: int = 0
    alerts: int = 0
    failed_tasks: int = 0
    batches: int = 0
    finished: bool = True  # False: the deadline came first; the next run goes on

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        text = (f"{verb} {self.events} event(s), {self.timeline} timeline row(s), {self.alerts} resolved alert(s), "
                f"{self.failed_tasks} failed job record(s) older than "
                f"{self.cutoff.astimezone(UTC):%Y-%m-%d %H:%M} UTC")
        if not self.dry_run:
            text += f" in {self.batches} batch(es)"
        return text + ("" if self.finished else "; stopped at the time limit, the next run goes on")


def history_prune(*, now: datetime | None = None, dry_run: bool = False, deadline: float | None = None,
                  batch_size: int = BATCH_SIZE) -> PruneReport:
    """Remove what is older than HUB_RETENTION_DAYS and no order needs; `deadline` is time.monotonic()."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=retention_days())
    report = PruneReport(cutoff=cutoff, events_cutoff=min(cutoff, now - _redelivery_window()), dry_run=dry_run)
    steps = [
        (_events_prunable(report, now).filter(duplicate_of__isnull=False), True),
        # Originals after their repeats: a repeat left behind would point at nothing (and become an original).
        (_originals_prunable(report, now), True),
        (_timeline_prunable(report, now), False),
        (Alert.objects.filter(state=Alert.State.RESOLVED, resolved_at__lt=cutoff), False),
        (Failure.objects.filter(stopped__lt=cutoff), False),
    ]
    counters = ["events", "events", "timeline", "alerts", "failed_tasks"]
    for (rows, lock), counter in zip(steps, counters):
        if dry_run:
            deleted = rows.count()
        else:
            deleted, report.finished = _delete_in_batches(rows, report=report, deadline=deadline,
                                                          batch_size=batch_size, lock_stores=lock)
        setattr(report, counter, getattr(report, counter) + deleted)
        if not report.finished:
            break  # the originals' step relies on their repeats' step having finished
    return report


def _redelivery_window() -> timedelta:
    """How long VTEX may deliver an event again: the longest feed retention plus its visibility timeout."""
    longest = FeedConfig.objects.aggregate(seconds=Max(F("retention_seconds") + F("visibility_timeout_seconds")))
    seconds = longest["seconds"]
    return max(DEFAULT_REDELIVERY, timedelta(seconds=seconds or 0))


def _order_settled(report: PruneReport, now: datetime) -> Q:
    """Finished, nothing owed or due, not held by a worker, and untouched for the whole retention."""
    return (Q(state__in=FINISHED_STATES, next_attempt_at__isnull=True, updated_at__lt=report.cutoff)
            & (Q(cancel_pending=False) | Q(erp_cancel_sent_at__isnull=False))
            & (Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)))


def _events_prunable(report: PruneReport, now: datetime) -> QuerySet[FeedEvent]:
    """Old events whose handle was committed (or that had none), of settled orders or of no order at all.

    A failed event without an order is kept: the work it asked for may never have been recorded.
    """
    orders = OrderSync.objects.filter(store_id=OuterRef("store_id"), order_id=OuterRef("order_id"))
    return (_older(FeedEvent.objects.all(), "received_at", report.events_cutoff)
            .filter(Q(committed_at__isnull=False) | Q(handle=""))
            .filter((~Exists(orders) & ~Q(outcome=FeedEvent.Outcome.FAILED))
                    | Exists(orders.filter(_order_settled(report, now)))))


def _originals_prunable(report: PruneReport, now: datetime) -> QuerySet[FeedEvent]:
    """First sightings that no remaining repeat points at (a dry run counts the repeats it would remove as gone)."""
    repeats = FeedEvent.objects.filter(duplicate_of=OuterRef("pk"))
    if report.dry_run:
        repeats = repeats.exclude(pk__in=_events_prunable(report, now).filter(duplicate_of__isnull=False)
                                  .values("pk"))
    return _events_prunable(report, now).filter(duplicate_of__isnull=True).filter(~Exists(repeats))


def _older(rows: QuerySet, field: str, cutoff: datetime) -> QuerySet:
    """Rows older than `cutoff`, also bounded by primary key (the id of the newest one, found through the
    time index), so that walking the key stops there instead of reading every recent row."""
    newest = (rows.filter(**{f"{field}__lt": cutoff}).order_by(f"-{field}", "-pk")  # rows of one bulk insert tie
              .values_list("pk", flat=True).first())
    if newest is None:
        return rows.none()
    return rows.filter(**{f"{field}__lt": cutoff, "pk__lte": newest})


def _timeline_prunable(report: PruneReport, now: datetime) -> QuerySet[SyncAttempt]:
    settled = OrderSync.objects.filter(_order_settled(report, now), pk=OuterRef("order_id"))
    return _older(SyncAttempt.objects.all(), "created_at", report.cutoff).filter(Exists(settled))


def _delete_in_batches(rows: QuerySet, *, report: PruneReport, deadline: float | None, batch_size: int,
                       lock_stores: bool) -> tuple[int, bool]:
    """Delete `rows` by primary key ranges of `batch_size`, one transaction each; returns (deleted, finished)."""
    deleted, last = 0, None
    while True:
        with transaction.atomic():
            if lock_stores:
                # As events_store_batch does: an event stored meanwhile cannot point at an original we delete.
                list(Store.objects.select_for_update().order_by("pk").values_list("pk", flat=True))
            batch = rows if last is None else rows.filter(pk__gt=last)
            ids = list(batch.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                return deleted, True
            # The conditions are checked again by the DELETE itself, within the range just read.
            deleted += _delete(rows.filter(pk__gte=ids[0], pk__lte=ids[-1]))
        last = ids[-1]
        report.batches += 1
        if deadline is not None and time.monotonic() >= deadline:
            return deleted, False


def _delete(rows: QuerySet) -> int:
    """One DELETE statement. Not QuerySet.delete(): it loads every row to null the repeats' duplicate_of."""
    meta = rows.model._meta
    sql, params = rows.order_by().values("pk").query.sql_with_params()
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {quote(meta.db_table)} WHERE {quote(meta.pk.column)} IN ({sql})", params)
        return cursor.rowcount
