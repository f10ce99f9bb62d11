"""django-q2 entry points for the feed: a few lines each; the work is in feeds.services."""

from __future__ import annotations

import time

from django.conf import settings

from core.job_control import schedule_paused
from core.jobs import job_continue, job_slot_take, job_slots, job_slots_free
from core.leases import lease_release
from core.models import Store
from feeds.services import feeds_pull


def pull_feeds(continuous: bool = False) -> str:
    """Read the enabled stores' feeds for HUB_JOB_BUDGET_SECONDS, then (continuous) queue the next run at once.

    The minute schedule starts it; each run queues the next, so the feeds are read without gaps. Up to
    HUB_PULL_RUNS runs at once (core/jobs.py); each feed is read by one of them, and a run without a feed
    takes one over when its reader dies.
    """
    slot = job_slot_take("pull_feeds")
    if slot is None:
        return f"all {job_slots('pull_feeds')} pull runs are active"
    try:
        if continuous and not schedule_paused("pull_feeds") and job_slots_free("pull_feeds"):
            job_continue("feeds.tasks.pull_feeds")  # fill the other slots within seconds
        report = feeds_pull(deadline=time.monotonic() + settings.HUB_JOB_BUDGET_SECONDS, until_empty=False)
    finally:
        lease_release(names=[slot])
    if continuous and not schedule_paused("pull_feeds"):  # staff paused it: let the chain end here
        job_continue("feeds.tasks.pull_feeds")
    return report.summary()


def pull_store(store_id: int) -> str:
    """Staff's "run now": read one store's feed until it is empty (or the job budget ends)."""
    report = feeds_pull(deadline=time.monotonic() + settings.HUB_JOB_BUDGET_SECONDS, store_ids=[store_id])
    return report.summary()


def refresh_queue_status() -> str:
    """Scheduled every 5 minutes: VTEX's queue size and oldest message age for the dashboard, whether VTEX
    still has each hook the hub keeps, and (HUB_AUTO_REAPPLY_CONFIG) re-applying what VTEX removed."""
    # Imported here so that this task stays one self-contained block at the end of the module.
    from feeds.queue_status import queue_check_error, queue_status_refresh_all, vtex_configs_watch

    configs = queue_status_refresh_all()
    failed = [config for config in configs if queue_check_error(config)]
    watched = vtex_configs_watch().summary()
    return f"checked {len(configs)} feed queue(s), {len(failed)} failed" + (f"; {watched}" if watched else "")


def reapply_config(store_id: int, what: str) -> str:
    """Queued when a feed read finds the feed gone and HUB_AUTO_REAPPLY_CONFIG is on: push the hub's copy again."""
    from feeds.queue_status import AUTO, config_reapply  # as above

    store = Store.objects.filter(pk=store_id, enabled=True).first()
    if store is None:
        return f"store {store_id} is gone or disabled: nothing re-applied"
    result = config_reapply(store=store, what=what, by=AUTO)
    return f"{what} of {store.name} re-applied: {'ok' if result.ok else 'refused'}"
