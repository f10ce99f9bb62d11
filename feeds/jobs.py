"""Queueing work for the job cluster (staff's "run now", the next run of a continuous job)."""

from __future__ import annotations

from django_q.tasks import async_task

from feeds.models import Store

RUNNABLE = {"pull": "feeds.tasks.pull_store", "dispatch": "orders.tasks.dispatch_store"}


def store_run_now(*, store: Store, kind: str, by: str) -> str:
    """Queue a pull or a dispatch of one store; returns the django-q2 task id."""
    if kind not in RUNNABLE:
        raise ValueError(f"unknown job {kind!r}: expected one of {', '.join(RUNNABLE)}")
    args = (store.pk, by) if kind == "dispatch" else (store.pk,)
    return async_task(RUNNABLE[kind], *args, task_name=f"{kind} {store.name} (by {by})"[:100])


def job_continue(func: str) -> None:
    """Queue the next run of a continuous job right away: the minute schedule only restarts a broken chain."""
    async_task(func, continuous=True, task_name=func.rsplit(".", 1)[-1])
