"""Queueing work for the job cluster on staff's request (no page waits on VTEX)."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from feeds.models import JobLease, Store

RUNNABLE = {"pull": "feeds.tasks.pull_store", "dispatch": "orders.tasks.dispatch_store"}


def store_run_now(*, store: Store, kind: str, by: str) -> str:
    """Queue a pull or a dispatch of one store; returns the django-q2 task id."""
    if kind not in RUNNABLE:
        raise ValueError(f"unknown job {kind!r}: expected one of {', '.join(RUNNABLE)}")
    args = (store.pk, by) if kind == "dispatch" else (store.pk,)
    return async_task(RUNNABLE[kind], *args, task_name=f"{kind} {store.name} (by {by})"[:100])


def lease_take(*, name: str, seconds: float) -> bool:
    """Hold the lease `name` for `seconds`, unless another live run holds it."""
    JobLease.objects.get_or_create(name=name)
    now = timezone.now()
    return JobLease.objects.filter(name=name).filter(Q(held_until__isnull=True) | Q(held_until__lt=now)).update(
        held_until=now + timedelta(seconds=seconds), holder=f"{socket.gethostname()}:{os.getpid()}"[:100]
    ) == 1


def lease_release(*, name: str) -> None:
    JobLease.objects.filter(name=name).update(held_until=None, holder="")


def job_continue(func: str) -> None:
    """Queue the next run of a continuous job right away: the minute schedule only restarts a broken chain."""
    async_task(func, continuous=True, task_name=func.rsplit(".", 1)[-1])
