"""Hand due orders to a pool of worker threads until a deadline or until there is nothing left."""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from django.db.models import Q, QuerySet
from django.utils import timezone

from core.models import Store
from integrationhub.db_recovery import database_lost
from orders.models import OrderSync
from orders.services.erp_breaker import waiting_on_open_breaker
from orders.services.process import (Claim, claims_drop, claims_release_dead_local, order_work, orders_claim,
                                     claim_free)

log = logging.getLogger("hub.dispatch")
RELEASE_LOOK_SECONDS = 2.0  # how often an idle dispatcher frees the claims of dead processes of this host


@dataclass
class DispatchReport:
    outcomes: Counter = field(default_factory=Counter)

    @property
    def processed(self) -> int:
        return sum(self.outcomes.values())

    def summary(self) -> str:
        parts = ", ".join(f"{count} {state}" for state, count in sorted(self.outcomes.items()))
        return f"dispatched {self.processed} order run(s)" + (f": {parts}" if parts else "")


class GracefulStop:
    """A stop asked by a signal: take no new order, let the ones in hand finish their step for `grace` seconds.

    Set from a signal handler, so plain attributes only: a lock taken there could deadlock the main thread.
    """

    def __init__(self, *, grace: float) -> None:
        self.grace = grace
        self.requested_at: float | None = None

    def request(self) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()

    def __call__(self) -> bool:
        return self.requested_at is not None

    def seconds_left(self) -> float:
        """Of the grace period: infinite until a stop is asked."""
        if self.requested_at is None:
            return math.inf
        return max(0.0, self.requested_at + self.grace - time.monotonic())


def _scope(store_ids: Iterable[int] | None) -> Q:
    return Q(store_id__in=list(store_ids)) if store_ids is not None else Q()


def due_orders(*, store_ids: Iterable[int] | None = None) -> QuerySet[OrderSync]:
    """Orders whose next attempt is due, of enabled, unpaused stores, oldest first, leaving aside those whose
    next step needs an ERP whose circuit breaker is open (claimed or not: orders_claim takes the free ones)."""
    now = timezone.now()
    return (
        OrderSync.objects.filter(_scope(store_ids), next_attempt_at__lte=now, store__enabled=True)
        .filter(Q(store__vtex_paused_until__isnull=True) | Q(store__vtex_paused_until__lte=now))
        .exclude(waiting_on_open_breaker(now))
        .order_by("next_attempt_at")
    )


def orders_due(*, store_ids: Iterable[int] | None = None, limit: int = 100) -> list[int]:
    """Ids of the due orders no worker holds (what the next claim would take)."""
    rows = due_orders(store_ids=store_ids).filter(claim_free(timezone.now()))
    return list(rows.values_list("pk", flat=True)[:limit])


def work_pending(*, store_ids: Iterable[int] | None = None, unheld: bool = False) -> bool:
    """True while some order still has work, due now or waiting out a backoff (parked orders don't count).

    unheld: only orders no worker holds (another process's are its work until it lets go or is found gone).
    """
    rows = OrderSync.objects.filter(_scope(store_ids), next_attempt_at__isnull=False, store__enabled=True)
    if unheld:
        rows = rows.filter(claim_free(timezone.now()))
    return rows.exists()


def orders_dispatch(
    *,
    deadline: float,
    store_ids: Iterable[int] | None = None,
    concurrency: int | None = None,
    stop_when: Callable[[], bool] | None = None,
    by: str = "schedule",
    stop: GracefulStop | None = None,
    tick: Callable[[], None] | None = None,
) -> DispatchReport:
    """Run due orders on `concurrency` threads until `deadline` (time.monotonic) or `stop_when()` is true.

    Each order is claimed in the database before any work, so several dispatchers (threads,
    processes, machines) can run at once without two working on one order. `stop`: a graceful stop
    (orders in hand finish their current step and are released, queued ones are left unclaimed);
    `tick`: called often from this (the calling) thread, e.g. to print progress.
    """
    store_ids = list(store_ids) if store_ids is not None else None
    concurrency = max(1, concurrency or settings.HUB_DISPATCH_CONCURRENCY)
    report = DispatchReport()
    claims_release_dead_local()  # a dead process's orders are worked now, not after HUB_CLAIM_SECONDS
    # Orders are claimed in batches by this thread and queued for the workers: one UPDATE and one read per
    # batch, not a poll plus a claim and a read per order.
    work: queue.Queue[Claim | None] = queue.Queue()
    in_flight: set[int] = set()
    lock = threading.Lock()

    def worker() -> None:
        try:
            while (claim := work.get()) is not None:
                try:
                    if stop is not None and stop():
                        claims_drop([claim])  # a stop came while it waited in the queue: give it back
                        continue
                    state = order_work(claim, by=by, stopping=stop)
                    with lock:
                        report.outcomes[state] += 1
                except Exception:  # keep the worker alive; the order's claim expires on its own
                    log.exception("dispatch of order %s failed", claim.sync.order_id)
                    close_old_connections()
                finally:
                    with lock:
                        in_flight.discard(claim.sync.pk)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, name=f"dispatch-{n}", daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        idle_pause = settings.HUB_DISPATCH_POLL_SECONDS
        release_next = time.monotonic() + RELEASE_LOOK_SECONDS
        while time.monotonic() < deadline and not (stop is not None and stop()):
            with lock:
                busy = set(in_flight)
            try:
                if tick is not None:
                    tick()
                if not busy and time.monotonic() >= release_next:
                    # Idle here while orders wait: a process that died holding them may be gone by now (a zombie
                    # is reaped late), so look again rather than wait for their claims to lapse.
                    claims_release_dead_local()
                    release_next = time.monotonic() + RELEASE_LOOK_SECONDS
                # Ask the database only when the workers are about to run dry.
                room = concurrency * 4 - len(busy) if work.qsize() < concurrency else 0
                due = orders_claim(due_orders(store_ids=store_ids), limit=room) if room > 0 else []
                done = not due and not busy and stop_when is not None and stop_when()
            except DatabaseError as exc:  # reconnect and go on: the orders in hand are the workers' business
                database_lost(None, "dispatch", exc)
                continue
            for claim in due:
                with lock:
                    in_flight.add(claim.sync.pk)
                work.put(claim)
            if due:
                continue
            if done:
                break
            time.sleep(min(0.05 if busy else idle_pause, max(0.0, deadline - time.monotonic())))
    finally:
        if stop is not None and stop():
            _drain(work)
        for _ in threads:
            work.put(None)
        for thread in threads:
            # Past a stop's grace, a worker still in an HTTP call is left behind (a daemon thread):
            # its order's claim expires on its own.
            left = math.inf if stop is None else stop.seconds_left()
            thread.join(timeout=None if left == math.inf else left)
        try:
            Store.objects.filter(**({"pk__in": store_ids} if store_ids is not None else {})).update(
                last_dispatch_at=timezone.now()
            )
        except DatabaseError as exc:  # the next run records it
            database_lost(None, "dispatch end", exc)
    return report


def _drain(work: queue.Queue[Claim | None]) -> None:
    """Give back the claims of queued orders no worker took (one UPDATE): the next run takes them at once."""
    left: list[Claim] = []
    while True:
        try:
            if (claim := work.get_nowait()) is not None:
                left.append(claim)
        except queue.Empty:
            break
    try:
        claims_drop(left)
    except DatabaseError as exc:  # they lapse within HUB_CLAIM_SECONDS (or sooner, once this process is gone)
        database_lost(None, "returning queued orders", exc)
