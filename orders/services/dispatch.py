"""Hand due orders to a pool of worker threads until a deadline or until there is nothing left."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections, connections
from django.db.models import Q
from django.utils import timezone

from feeds.models import Store
from orders.models import OrderSync
from orders.services.process import order_process

log = logging.getLogger("hub.dispatch")


@dataclass
class DispatchReport:
    outcomes: Counter = field(default_factory=Counter)

    @property
    def processed(self) -> int:
        return sum(self.outcomes.values())

    def summary(self) -> str:
        parts = ", ".join(f"{count} {state}" for state, count in sorted(self.outcomes.items()))
        return f"dispatched {self.processed} order run(s)" + (f": {parts}" if parts else "")


def _scope(store_ids: Iterable[int] | None) -> Q:
    return Q(store_id__in=list(store_ids)) if store_ids is not None else Q()


def orders_due(*, store_ids: Iterable[int] | None = None, exclude: Iterable[int] = (), limit: int = 100) -> list[int]:
    """Ids of orders whose next attempt is due, not held by a worker, of enabled, unpaused stores."""
    now = timezone.now()
    rows = (
        OrderSync.objects.filter(_scope(store_ids), next_attempt_at__lte=now, store__enabled=True)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .filter(Q(store__vtex_paused_until__isnull=True) | Q(store__vtex_paused_until__lte=now))
        .exclude(pk__in=list(exclude))
        .order_by("next_attempt_at")
    )
    return list(rows.values_list("pk", flat=True)[:limit])


def work_pending(*, store_ids: Iterable[int] | None = None) -> bool:
    """True while some order still has work, due now or waiting out a backoff (parked orders don't count)."""
    return OrderSync.objects.filter(_scope(store_ids), next_attempt_at__isnull=False, store__enabled=True).exists()


def orders_dispatch(
    *,
    deadline: float,
    store_ids: Iterable[int] | None = None,
    concurrency: int | None = None,
    stop_when: Callable[[], bool] | None = None,
    by: str = "schedule",
) -> DispatchReport:
    """Run due orders on `concurrency` threads until `deadline` (time.monotonic) or `stop_when()` is true.

    Each order is claimed in the database before any work, so several dispatchers (threads,
    processes, machines) can run at once without two working on one order.
    """
    store_ids = list(store_ids) if store_ids is not None else None
    concurrency = max(1, concurrency or settings.HUB_DISPATCH_CONCURRENCY)
    report = DispatchReport()
    work: queue.Queue[int | None] = queue.Queue()
    in_flight: set[int] = set()
    lock = threading.Lock()

    def worker() -> None:
        try:
            while (sync_id := work.get()) is not None:
                try:
                    state = order_process(sync_id=sync_id, by=by)
                    if state is not None:
                        with lock:
                            report.outcomes[state] += 1
                except Exception:  # keep the worker alive; the order's claim expires on its own
                    log.exception("dispatch of order %s failed", sync_id)
                    close_old_connections()
                finally:
                    with lock:
                        in_flight.discard(sync_id)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, name=f"dispatch-{n}", daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        idle_pause = settings.HUB_DISPATCH_POLL_SECONDS
        while time.monotonic() < deadline:
            with lock:
                busy = set(in_flight)
            # Ask the database only when the workers are about to run dry.
            room = concurrency * 4 - len(busy) if work.qsize() < concurrency else 0
            due = orders_due(store_ids=store_ids, exclude=busy, limit=room) if room > 0 else []
            for sync_id in due:
                with lock:
                    in_flight.add(sync_id)
                work.put(sync_id)
            if due:
                continue
            if not busy and stop_when is not None and stop_when():
                break
            time.sleep(min(0.05 if busy else idle_pause, max(0.0, deadline - time.monotonic())))
    finally:
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join()
        Store.objects.filter(**({"pk__in": store_ids} if store_ids is not None else {})).update(
            last_dispatch_at=timezone.now()
        )
    return report
