"""Queueing work for the job cluster: staff's "run now", and the continuous runs of pull and dispatch.

The continuous jobs run as several runs at once, each in a job worker process of any cluster on any
machine: run slots are leases named "<job>:<n>", n < the job's count, held by the heartbeat while the run
lives. A run that starts while slots are free queues one more run, so all slots fill within seconds of a
start, and a slot whose process died is taken again within HUB_CLAIM_SECONDS by the next run queued.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from django_q.tasks import async_task

from core.leases import lease_acquire
from core.models import JobLease, Store

RUNNABLE = {"pull": "feeds.tasks.pull_store", "dispatch": "orders.tasks.dispatch_store"}
# How many runs of each continuous job may run at once (settings), by schedule name.
RUN_SLOTS = {"pull_feeds": "HUB_PULL_RUNS", "dispatch_orders": "HUB_DISPATCH_RUNS"}


def store_run_now(*, store: Store, kind: str, by: str) -> str:
    """Queue a pull or a dispatch of one store; returns the django-q2 task id."""
    if kind not in RUNNABLE:
        raise ValueError(f"unknown job {kind!r}: expected one of {', '.join(RUNNABLE)}")
    args = (store.pk, by) if kind == "dispatch" else (store.pk,)
    return async_task(RUNNABLE[kind], *args, task_name=f"{kind} {store.name} (by {by})"[:100])


def job_continue(func: str) -> None:
    """Queue the next run of a continuous job right away: the minute schedule only restarts a broken chain."""
    async_task(func, continuous=True, task_name=func.rsplit(".", 1)[-1])


def job_slots(job: str) -> int:
    """The job's setting, capped so that the pull and dispatch runs leave a worker of a cluster to the other
    jobs (alerts, reconciliation, staff's "run now"): a cluster with 2 workers runs one of each."""
    cap = max(1, (int(settings.Q_CLUSTER.get("workers", 1)) - 1) // 2)
    return max(1, min(int(getattr(settings, RUN_SLOTS[job])), cap))


def job_slot_names(job: str) -> list[str]:
    """The leases of `job`'s run slots: "<job>:0", "<job>:1", ..."""
    return [f"{job}:{n}" for n in range(job_slots(job))]


def job_slot_take(job: str) -> str | None:
    """The lease of a free run slot of `job`, now ours; None when every slot has a live run."""
    return next((name for name in job_slot_names(job) if lease_acquire(name=name).taken), None)


def job_slots_free(job: str) -> bool:
    """Whether another run of `job` would find a slot (a dead holder's slot counts as taken until it lapses)."""
    names = job_slot_names(job)
    busy = JobLease.objects.filter(name__in=names, held_until__gte=timezone.now()).exclude(holder="").count()
    return busy < len(names)
