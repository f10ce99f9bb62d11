"""One heartbeat per process: keeps this process's order claims and feed/job leases alive while it lives.

Claims and leases are short (HUB_CLAIM_SECONDS, 30 s by default) so that the work of a process that dies
(SIGKILL, a lost machine) is taken up by another within that time. While the process lives, this thread
renews what it holds every HUB_HEARTBEAT_SECONDS, whatever its worker threads are doing: a long VTEX or
ERP call cannot make a lease lapse. Only what is registered in a `Holds` is renewed, so a claim that a
worker failed to release (the database away at that moment) still expires on its own once dropped.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import connections

log = logging.getLogger("hub.heartbeat")

_lock = threading.Lock()
_all_holds: list[Holds] = []
_started_in: int | None = None  # the pid whose thread runs: a forked child starts its own


def hold_seconds() -> float:
    """How long a claim or lease lasts without a heartbeat."""
    return float(settings.HUB_CLAIM_SECONDS)


def beat_seconds() -> float:
    """How often the heartbeat renews: at least three beats per hold, so one slow beat loses nothing."""
    return max(0.05, min(float(settings.HUB_HEARTBEAT_SECONDS), hold_seconds() / 3))


class Holds:
    """What this process holds of one kind (order claim tokens, lease names), renewed on every beat.

    `renew(items, seconds)` extends the hold of exactly those items, and only where this process still
    holds them (a claim taken over after a lapse stays the other worker's).
    """

    def __init__(self, name: str, renew: Callable[[list[str], float], None]) -> None:
        self.name, self._renew = name, renew
        self._items: set[str] = set()
        self._lock = threading.Lock()
        with _lock:
            _all_holds.append(self)

    def add(self, item: str) -> None:
        with self._lock:
            self._items.add(item)
        _ensure_started()

    def discard(self, items: Iterable[str]) -> None:
        with self._lock:
            self._items.difference_update(items)

    def held(self) -> list[str]:
        with self._lock:
            return sorted(self._items)

    def renew(self, seconds: float) -> None:
        if items := self.held():
            self._renew(items, seconds)

    def _forget(self) -> None:
        # In a forked child: what the parent holds is the parent's to renew, not ours.
        self._items, self._lock = set(), threading.Lock()


_chores: dict[str, Callable[[], object]] = {}


def heartbeat_chore(name: str, chore: Callable[[], object]) -> None:
    """Run `chore` on every beat too: freeing what dead processes of this host held, so their orders and feeds
    are taken up within a beat rather than when the next dispatch run starts or their hold lapses."""
    with _lock:
        _chores[name] = chore


def heartbeat_now() -> None:
    """One beat at once, from the calling thread."""
    with _lock:
        holds, chores = list(_all_holds), list(_chores.items())
    if not any(holds_.held() for holds_ in holds):
        return  # an idle process: nothing to renew, and the working ones do the chores
    seconds = hold_seconds()
    for holds_ in holds:
        try:
            holds_.renew(seconds)
        except Exception:  # the database away for a moment: the next beat tries again, well before expiry
            log.warning("heartbeat: renewing %s failed", holds_.name, exc_info=True)
    for name, chore in chores:
        try:
            chore()
        except Exception:
            log.warning("heartbeat: %s failed", name, exc_info=True)


def _ensure_started() -> None:
    global _started_in
    with _lock:
        if _started_in == os.getpid():
            return
        _started_in = os.getpid()
    threading.Thread(target=_run, args=(os.getpid(),), name="heartbeat", daemon=True).start()


def _run(me: int) -> None:
    stop = threading.Event()  # never set: a daemon thread ends with its process
    while _started_in == me and not _exiting:
        stop.wait(beat_seconds())
        try:
            heartbeat_now()
            # A connection held between beats would outlive its use (and keep a test database from being dropped).
            connections.close_all()
        except Exception:  # the thread must outlive any one beat
            log.warning("heartbeat: a beat failed", exc_info=True)


_exiting = False


@atexit.register
def _at_exit() -> None:
    global _exiting
    _exiting = True  # no beat while the interpreter (and its logging, its database) is shutting down


def _after_fork_in_child() -> None:
    global _lock, _started_in
    _lock, _started_in = threading.Lock(), None
    for holds in _all_holds:
        holds._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
