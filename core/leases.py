"""Named leases: one holder at a time across processes and machines, expiring on their own after a crash.

Leases last HUB_CLAIM_SECONDS and this process's heartbeat (core.heartbeat) renews the ones it holds, so
a dead holder's lease is free within that time. The holder is "hostname:pid:pid-namespace". A lease whose holder is on this host, in this PID namespace,
and whose pid no longer exists is taken over at once instead of after its expiry: no process can be
using it. Anything less certain (another host, another namespace, a pid that exists) waits for expiry.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone

from django.db.models import Q
from django.utils import timezone

from core.heartbeat import Holds, hold_seconds
from core.models import JobLease

log = logging.getLogger("hub.leases")
HOLDER_MAX = 100  # JobLease.holder's max_length


def _pid_namespace() -> str:
    """Linux: the PID namespace's inode. Two containers may share a hostname, never a PID namespace."""
    try:
        match = re.search(r"\d+", os.readlink("/proc/self/ns/pid"))
    except OSError:
        return ""
    return match.group(0) if match else ""


def lease_holder_id() -> str:
    """Who this process is, as written in JobLease.holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{_pid_namespace()}"[:HOLDER_MAX]


@dataclass(frozen=True)
class LeaseHolder:
    host: str
    pid: int | None
    namespace: str
    until: datetime | None

    @classmethod
    def parse(cls, holder: str, until: datetime | None = None) -> LeaseHolder:
        # Older rows say "hostname:pid"; hostnames have no colon.
        host, _, rest = holder.partition(":")
        pid, _, namespace = rest.partition(":")
        return cls(host=host, pid=int(pid) if pid.isdigit() else None, namespace=namespace, until=until)

    def describe(self) -> str:
        """'host X pid N (lease until 12:00:03 UTC)', for people."""
        text = f"host {self.host or '?'} pid {self.pid if self.pid is not None else '?'}"
        if self.until is not None:
            text += f" (lease until {self.until.astimezone(dt_timezone.utc):%H:%M:%S} UTC)"
        return text


def holder_is_gone(holder: str) -> bool:
    """True only when certain: the holder ran on this host and PID namespace, and its pid no longer exists.

    A reused pid looks alive, so the lease waits for its expiry: safe. A zombie also looks alive.
    """
    theirs, mine = LeaseHolder.parse(holder), LeaseHolder.parse(lease_holder_id())
    if (theirs.pid is None or theirs.pid <= 0 or theirs.pid == os.getpid() or not mine.namespace
            or (theirs.host, theirs.namespace) != (mine.host, mine.namespace) or len(lease_holder_id()) >= HOLDER_MAX):
        return False  # a truncated holder cannot be compared reliably
    try:
        os.kill(theirs.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, under another user
        return False
    return False


@dataclass(frozen=True)
class LeaseAttempt:
    taken: bool
    holder: LeaseHolder | None = None  # who holds it (not taken), or whom we took it from (took_over)
    took_over: bool = False


def lease_acquire(*, name: str) -> LeaseAttempt:
    """Hold the lease `name` (renewed by the heartbeat until released), unless another live holder has it;
    says who has it if so."""
    JobLease.objects.get_or_create(name=name)
    now = timezone.now()
    values = {"held_until": now + timedelta(seconds=hold_seconds()), "holder": lease_holder_id()}
    if JobLease.objects.filter(name=name).filter(Q(held_until__isnull=True) | Q(held_until__lt=now)).update(**values):
        _held.add(name)
        return LeaseAttempt(taken=True)
    row = JobLease.objects.filter(name=name).values_list("holder", "held_until").first()
    if row is None:  # deleted meanwhile: try once more next time
        return LeaseAttempt(taken=False)
    holder = LeaseHolder.parse(row[0], row[1])
    if holder_is_gone(row[0]):
        # Matching the holder and expiry we read: of two processes taking over at once, one wins.
        if JobLease.objects.filter(name=name, holder=row[0], held_until=row[1]).update(**values):
            log.warning("lease %s: took it over from %s, which no longer exists", name, holder.describe())
            _held.add(name)
            return LeaseAttempt(taken=True, holder=holder, took_over=True)
        # Another process took it over first: say who holds it now, not the dead one.
        row = JobLease.objects.filter(name=name).values_list("holder", "held_until").first() or row
        holder = LeaseHolder.parse(row[0], row[1])
    return LeaseAttempt(taken=False, holder=holder)


def lease_take(*, name: str) -> bool:
    """Hold the lease `name` until released, unless another live holder has it."""
    return lease_acquire(name=name).taken


def _leases_renew(names: list[str], seconds: float) -> None:
    """The heartbeat's renewal: extend our own leases; one that lapsed and was taken by another stays theirs."""
    JobLease.objects.filter(name__in=names, holder=lease_holder_id()).update(
        held_until=timezone.now() + timedelta(seconds=seconds))


_held = Holds("leases", _leases_renew)


def lease_release(*, names: Iterable[str]) -> None:
    """Free our own leases at once (never another holder's)."""
    names = list(names)
    _held.discard(names)
    JobLease.objects.filter(name__in=names, holder=lease_holder_id()).update(held_until=None, holder="")


def store_pull_lease(store_id: int) -> str:
    """The lease that keeps one pulling process per feed (it runs several reader threads of its own)."""
    return f"pull-store:{store_id}"


def leases_release_dead_local() -> list[str]:
    """Free the leases of processes of this host that no longer exist (holder_is_gone); returns their names."""
    released = []
    for name, holder, until in JobLease.objects.exclude(holder="").values_list("name", "holder", "held_until"):
        # Matching the holder and expiry we read: a lease taken over meanwhile is not released.
        if holder_is_gone(holder) and JobLease.objects.filter(name=name, holder=holder, held_until=until).update(
                held_until=None, holder=""):
            released.append(name)
    return released

