"""The pull + dispatch cycle shared by the scheduled jobs and the `sync` command."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import connections

from feeds.services import PullReport, feeds_pull
from orders.services.dispatch import DispatchReport, orders_dispatch, work_pending


@dataclass
class SyncResult:
    idle: bool
    pulls: list[PullReport] = field(default_factory=list)
    dispatch: DispatchReport = field(default_factory=DispatchReport)
    blocked: list[str] = field(default_factory=list)

    def summary(self) -> str:
        total = PullReport()
        for report in self.pulls:
            total.merge(report)
        state = "idle" if self.idle else "NOT idle: " + ("; ".join(self.blocked) or "timeout")
        return f"{total.summary()}\n{self.dispatch.summary()}\n{state}"


def sync_until_idle(*, timeout: float, store_ids: Iterable[int] | None = None) -> SyncResult:
    """Pull and dispatch side by side until the feeds are empty and no order has work left, or timeout.

    Orders waiting out a backoff count as work (we wait); parked orders do not.
    """
    store_ids = list(store_ids) if store_ids is not None else None
    deadline = time.monotonic() + timeout
    result = SyncResult(idle=False)
    while time.monotonic() < deadline:
        holder: dict[str, PullReport] = {}

        def pull() -> None:
            try:
                holder["report"] = feeds_pull(deadline=deadline, store_ids=store_ids, until_empty=True)
            finally:
                connections.close_all()

        puller = threading.Thread(target=pull, name="pull", daemon=True)
        puller.start()
        dispatched = orders_dispatch(
            deadline=deadline, store_ids=store_ids,
            stop_when=lambda: not puller.is_alive() and not work_pending(store_ids=store_ids),
        )
        puller.join()
        result.dispatch.outcomes.update(dispatched.outcomes)
        report = holder.get("report") or PullReport(errors=["feed reader crashed"])
        result.pulls.append(report)
        # Idle only when a whole round read nothing: start-handling itself adds events to the feed.
        if report.read == 0 and not report.errors and not report.stores_busy and not work_pending(store_ids=store_ids):
            result.idle = True
            break
        if report.blocked and report.read == 0 and not work_pending(store_ids=store_ids):
            # A feed that answers 404/401/403 stays that way until someone acts: don't wait for the timeout.
            result.blocked = sorted(set(report.blocked))
            break
        if report.errors or report.stores_busy:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    return result
