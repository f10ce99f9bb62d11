"""django-q2 entry points for the feed: a few lines each; the work is in feeds.services."""

from __future__ import annotations

import time

from django.conf import settings

from feeds.job_control import schedule_paused
from feeds.jobs import job_continue
from feeds.leases import lease_release, lease_take
from feeds.services import feeds_pull


def pull_feeds(continuous: bool = False) -> str:
    """Read every enabled store's feed for HUB_JOB_BUDGET_SECONDS, then (continuous) queue the next run at once.

    The minute schedule starts it; each run queues the next, so the feed is read without gaps. The lease
    keeps a second chain (the schedule firing while a run is active) from starting.
    """
    budget = settings.HUB_JOB_BUDGET_SECONDS
    if not lease_take(name="pull_feeds", seconds=budget + 60):
        return "another pull run is active"
    try:
        report = feeds_pull(deadline=time.monotonic() + budget, until_empty=False)
    finally:
        lease_release(names=["pull_feeds"])
    if continuous and not schedule_paused("pull_feeds"):  # staff paused it: let the chain end here
        job_continue("feeds.tasks.pull_feeds")
    return report.summary()


def pull_store(store_id: int) -> str:
    """Staff's "run now": read one store's feed until it is empty (or the job budget ends)."""
    report = feeds_pull(deadline=time.monotonic() + settings.HUB_JOB_BUDGET_SECONDS, store_ids=[store_id])
    return report.summary()


def refresh_queue_status() -> str:
    """Scheduled every 5 minutes: store VTEX's queue size and oldest message age for the dashboard."""
    # Imported here so that this task stays one self-contained block at the end of the module.
    from feeds.queue_status import queue_check_error, queue_status_refresh_all

    configs = queue_status_refresh_all()
    failed = [config for config in configs if queue_check_error(config)]
    return f"checked {len(configs)} feed queue(s), {len(failed)} failed"
