"""The pull + dispatch cycle shared by the scheduled jobs and the `sync` command."""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connections
from django.utils import timezone

from feeds.handles import handles_owed
from feeds.services import PullReport, feeds_pull
from orders.services.dispatch import DispatchReport, orders_dispatch, work_pending


@dataclass
class SyncResult:
    idle: bool
    pulls: list[PullReport] = field(default_factory=list)
    dispatch: DispatchReport = field(default_factory=DispatchReport)
    blocked: list[str] = field(default_factory=list)
    owed: int = 0  # stored events VTEX may still hold uncommitted, after the last round

    def summary(self) -> str:
        total = PullReport()
        for report in self.pulls:
            total.merge(report)
        state = "idle" if self.idle else "NOT idle: " + ("; ".join(self.blocked) or "timeout")
        if self.owed and not self.idle:
            state += f"; {self.owed} stored event(s) not committed to VTEX yet"
        return f"{total.summary()}\n{self.dispatch.summary()}\n{state}"


class Puller:
    """Runs feeds_pull(until_empty=True) beside the dispatcher: in a forked process where possible.

    The hub's Python code holds the GIL; pulling in a process of its own lets `sync` use a second
    core (the benchmark in docs/performance.md shows the difference). Without fork, a thread.
    """

    def __init__(self, *, deadline: float, store_ids: list[int] | None) -> None:
        self.report: PullReport | None = None
        args = (deadline, store_ids)
        if settings.HUB_SYNC_PULL_PROCESS and "fork" in multiprocessing.get_all_start_methods():
            connections.close_all()  # the child must open its own connections, not share ours
            context = multiprocessing.get_context("fork")
            self._receive, send = context.Pipe(duplex=False)
            self._runner = context.Process(target=_pull_and_send, args=(send, os.getpid(), *args), name="pull",
                                           daemon=True)
        else:
            self._receive = None
            self._runner = threading.Thread(target=self._pull_here, args=args, name="pull", daemon=True)
        self._runner.start()

    def _pull_here(self, deadline: float, store_ids: list[int] | None) -> None:
        try:
            self.report = feeds_pull(deadline=deadline, store_ids=store_ids, until_empty=True)
        finally:
            connections.close_all()

    def is_alive(self) -> bool:
        return self._runner.is_alive() and not (self._receive is not None and self._receive.poll())

    def join(self) -> PullReport:
        if self._receive is not None:
            try:
                self.report = self._receive.recv() if self._receive.poll(timeout=30) else None
            except EOFError:
                self.report = None
        self._runner.join(timeout=30)
        return self.report or PullReport(errors=["feed reader crashed"])


def _die_with_parent(parent: int) -> None:
    """Linux: if `sync` is killed, its feed reader goes too, instead of reading on as an orphan."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _pull_and_send(send, parent: int, deadline: float, store_ids: list[int] | None) -> None:
    _die_with_parent(parent)
    try:
        report = feeds_pull(deadline=deadline, store_ids=store_ids, until_empty=True)
    except Exception as exc:  # reported to the parent, which treats the round as not idle
        report = PullReport(errors=[f"feed reader crashed: {type(exc).__name__}: {exc}"])
    finally:
        connections.close_all()
    send.send(report)
    send.close()


def sync_until_idle(*, timeout: float, store_ids: Iterable[int] | None = None) -> SyncResult:
    """Pull and dispatch side by side until the feeds are empty, nothing is owed to VTEX and no order has work left.

    Orders waiting out a backoff count as work (we wait); parked orders do not. A stored event whose commit
    failed is owed while VTEX may still hold its item (feeds/handles.py): the item is hidden, so a round reads
    nothing, yet the feed is not empty.
    """
    store_ids = list(store_ids) if store_ids is not None else None
    deadline = time.monotonic() + timeout
    result = SyncResult(idle=False)
    while time.monotonic() < deadline:
        # Owed as of the round's start: an item that reappears after the round's last read must not be missed.
        round_started = timezone.now()
        puller = Puller(deadline=deadline, store_ids=store_ids)
        dispatched = orders_dispatch(
            deadline=deadline, store_ids=store_ids,
            stop_when=lambda: not puller.is_alive() and not work_pending(store_ids=store_ids),
        )
        report = puller.join()
        result.dispatch.outcomes.update(dispatched.outcomes)
        result.pulls.append(report)
        result.owed = handles_owed(store_ids=store_ids, now=round_started)
        # Idle only when a whole round read nothing and worked no order: start-handling itself adds events to
        # the feed, maybe after the round's last read.
        if (report.read == 0 and not dispatched.processed and not report.errors and not report.stores_busy
                and not result.owed and not work_pending(store_ids=store_ids)):
            result.idle = True
            break
        if report.blocked and report.read == 0 and not work_pending(store_ids=store_ids):
            # A feed that answers 404/401/403 stays that way until someone acts: don't wait for the timeout.
            result.blocked = sorted(set(report.blocked))
            break
        if report.errors or report.stores_busy or (result.owed and not report.read):
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    return result
