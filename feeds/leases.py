"""Named leases: one holder at a time across processes and machines, expiring on their own after a crash."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from feeds.models import JobLease


def lease_take(*, name: str, seconds: float) -> bool:
    """Hold the lease `name` for `seconds`, unless another live holder has it."""
    JobLease.objects.get_or_create(name=name)
    now = timezone.now()
    return JobLease.objects.filter(name=name).filter(Q(held_until__isnull=True) | Q(held_until__lt=now)).update(
        held_until=now + timedelta(seconds=seconds), holder=f"{socket.gethostname()}:{os.getpid()}"[:100]
    ) == 1


def lease_renew(*, names: Iterable[str], seconds: float) -> None:
    JobLease.objects.filter(name__in=list(names)).update(held_until=timezone.now() + timedelta(seconds=seconds))


def lease_release(*, names: Iterable[str]) -> None:
    JobLease.objects.filter(name__in=list(names)).update(held_until=None, holder="")


def store_pull_lease(store_id: int) -> str:
    """The lease that keeps one pulling process per feed (it runs several reader threads of its own)."""
    return f"pull-store:{store_id}"
