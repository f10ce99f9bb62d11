"""django-q2 entry points for orders: a few lines each; the work is in orders.services."""

from __future__ import annotations

import time

from django.conf import settings

from core.job_control import schedule_paused
from core.jobs import job_continue, job_slot_take, job_slots, job_slots_free
from core.leases import lease_release, lease_take
from orders.alerts import alerts_evaluate
from orders.services.dispatch import orders_dispatch
from orders.services.process import order_process


def dispatch_orders(continuous: bool = False) -> str:
    """Work due orders for HUB_JOB_BUDGET_SECONDS, then (continuous) queue the next run at once (see pull_feeds).

    Up to HUB_DISPATCH_RUNS runs at once, in any job worker of any cluster: each order is claimed by one.
    """
    slot = job_slot_take("dispatch_orders")
    if slot is None:
        return f"all {job_slots('dispatch_orders')} dispatch runs are active"
    try:
        if continuous and not schedule_paused("dispatch_orders") and job_slots_free("dispatch_orders"):
            job_continue("orders.tasks.dispatch_orders")  # fill the other slots within seconds
        report = orders_dispatch(deadline=time.monotonic() + settings.HUB_JOB_BUDGET_SECONDS)
    finally:
        lease_release(names=[slot])
    if continuous and not schedule_paused("dispatch_orders"):  # staff paused it: let the chain end here
        job_continue("orders.tasks.dispatch_orders")
    return report.summary()


def dispatch_store(store_id: int, by: str = "schedule") -> str:
    """Staff's "run now": work one store's due orders until none is due (or the job budget ends)."""
    return orders_dispatch(
        deadline=time.monotonic() + settings.HUB_JOB_BUDGET_SECONDS, store_ids=[store_id], by=by,
        stop_when=lambda: True,
    ).summary()


def process_order(sync_id: int, by: str) -> str:
    """Staff's "retry now" / "start handling": advance one order now, recorded as done by `by`."""
    return str(order_process(sync_id=sync_id, by=by, due_only=False))


def resend_order(sync_id: int, by: str) -> str:
    """Staff's "resend to ERP", with the order's usual Idempotency-Key."""
    return str(order_process(sync_id=sync_id, by=by, due_only=False, resend=True))


def reconcile_orders() -> str:
    """Every HUB_RECONCILE_MINUTES: queue the ready-for-handling orders VTEX lists and no event brought."""
    # Imported here so that this task stays one self-contained block at the end of the module.
    from orders.services.reconcile import orders_reconcile

    return orders_reconcile().summary()


ALERTS_LEASE = "evaluate_alerts"


def evaluate_alerts() -> str:
    """Compare the health signals with the open alerts and send what is due (every minute)."""
    # Two runs at once (a late one and the next) would both see a new signal and both send "firing".
    if not lease_take(name=ALERTS_LEASE):
        return "another alert evaluation is running"
    try:
        return alerts_evaluate().summary()
    finally:
        lease_release(names=[ALERTS_LEASE])


PRUNE_LEASE = "prune_history"


def prune_history() -> str:
    """Daily: remove the history older than HUB_RETENTION_DAYS that no order needs; a long backlog goes on
    in the next run, queued at once."""
    # Imported here so that this task stays one self-contained block at the end of the module.
    from django_q.tasks import async_task

    from core.retention import PRUNE_TASK_FUNC
    from orders.services.prune import history_prune

    if not lease_take(name=PRUNE_LEASE):
        return "another prune run is active"
    try:
        report = history_prune(deadline=time.monotonic() + settings.HUB_JOB_BUDGET_SECONDS)
    finally:
        lease_release(names=[PRUNE_LEASE])
    if not report.finished and not schedule_paused("prune_history"):  # staff paused it: the rest waits
        async_task(PRUNE_TASK_FUNC, task_name="prune_history")
    return report.summary()
