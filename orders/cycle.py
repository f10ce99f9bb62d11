"""The pull + dispatch cycle shared by the scheduled jobs and the `sync` command."""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Max, Q
from django.utils import timezone

from core.models import ErpConnection, Store
from feeds.handles import handles_owed
from feeds.models import FeedEvent
from feeds.services import FeedProblem, PullReport, feeds_pull
from integrationhub.db_recovery import database_lost
from orders.models import OrderSync
from orders.services.dispatch import DispatchReport, GracefulStop, orders_dispatch, work_pending

# A store that never answered in this run: the first try and two quick retries, then `sync` gives up on it.
FAIL_FAST_ROUNDS = 3
STOP_MARGIN_SECONDS = 5.0  # on top of the slowest calls in hand, for the database writes after them
log = logging.getLogger("hub.sync")


@dataclass
class SyncResult:
    idle: bool
    pulls: list[PullReport] = field(default_factory=list)
    dispatch: DispatchReport = field(default_factory=DispatchReport)
    blocked: list[str] = field(default_factory=list)
    owed: int = 0  # stored events VTEX may still hold uncommitted, after the last round
    problems: list[str] = field(default_factory=list)  # each store given up: where, why and what to check
    stopped: bool = False  # a signal asked for a graceful stop
    seconds: float = 0.0

    def compact(self) -> SyncResult:
        """The same result with one pull report for all rounds, so it pickles small."""
        total = PullReport()
        for report in self.pulls:
            total.merge(report)
        total.errors, total.problems, total.notes = total.errors[-20:], total.problems[-20:], total.notes[-20:]
        total.busy, total.blocked, total.answered = total.busy[:5], sorted(set(total.blocked)), sorted(set(total.answered))
        return replace(self, pulls=[total])

    def merge(self, other: SyncResult) -> None:
        """Take in another worker's result: idle only if both are."""
        self.idle = self.idle and other.idle
        self.pulls += other.pulls
        self.dispatch.outcomes.update(other.dispatch.outcomes)
        self.blocked = sorted(set(self.blocked) | set(other.blocked))
        self.owed = max(self.owed, other.owed)
        self.problems = sorted(set(self.problems) | set(other.problems))
        self.stopped = self.stopped or other.stopped
        self.seconds = max(self.seconds, other.seconds)

    def summary(self) -> str:
        total = PullReport()
        for report in self.pulls:
            total.merge(report)
        took = f"after {self.seconds:.1f}s"
        if self.idle:
            state = f"idle {took}"
        elif self.stopped:
            state = f"stopped before idle (signal) {took}"
        else:
            state = f"NOT idle {took}: " + ("; ".join(self.blocked) or "timeout")
        if self.owed and not self.idle:
            state += f"; {self.owed} stored event(s) not committed to VTEX yet"
        return f"{total.summary()}\n{self.dispatch.summary()}\n{state}"


@dataclass(frozen=True)
class SyncProgress:
    """Where a `sync` run stands, counted in the database (the feed reader is another process)."""

    seconds: float
    read: int
    committed: int
    handled: int
    waiting: int
    attention: int
    owed: int

    def line(self) -> str:
        return (f"[{self.seconds:.0f}s] events: {self.read} read, {self.committed} committed; orders: "
                f"{self.handled} handled, {self.waiting} waiting, {self.attention} need attention; "
                f"{self.owed} owed to VTEX")


def sync_progress(*, store_ids: Iterable[int] | None, since: datetime, seconds: float) -> SyncProgress:
    """Events read and committed and orders handled since `since`; orders waiting and parked now."""
    scope = Q(store_id__in=list(store_ids)) if store_ids is not None else Q()
    events, orders = FeedEvent.objects.filter(scope), OrderSync.objects.filter(scope)
    return SyncProgress(
        seconds=seconds,
        read=events.filter(received_at__gte=since).count(),
        committed=events.filter(committed_at__gte=since).count(),
        handled=orders.filter(handling_started_at__gte=since).count(),
        waiting=orders.filter(next_attempt_at__isnull=False, store__enabled=True).count(),
        attention=orders.filter(state=OrderSync.State.NEEDS_ATTENTION).count(),
        owed=handles_owed(store_ids=store_ids),
    )


def stop_grace_seconds(*, store_ids: Iterable[int] | None = None) -> float:
    """How long a graceful stop may take: the longest step in hand (an order's GET + ERP call, or a feed
    read + commit), plus a margin for the writes."""
    erps = ErpConnection.objects.filter(store__enabled=True)
    if store_ids is not None:
        erps = erps.filter(store_id__in=list(store_ids))
    erp = erps.aggregate(slowest=Max("timeout_seconds"))["slowest"] or 0.0
    vtex = float(settings.HUB_HTTP_TIMEOUT_SECONDS)
    return max(2 * vtex, vtex + float(erp)) + STOP_MARGIN_SECONDS


class Puller:
    """Runs feeds_pull(until_empty=True) in a thread beside the dispatcher threads of this worker process.

    `sync` uses the machine's cores by running several worker processes (sync_with_workers), not by giving
    the feed reader a process of its own: one model for `sync`, the jobs and the benchmark.
    """

    def __init__(self, *, deadline: float, store_ids: list[int] | None, stop: GracefulStop) -> None:
        self.report: PullReport | None = None
        self._runner = threading.Thread(target=self._pull, args=(deadline, store_ids, stop), name="pull", daemon=True)
        self._runner.start()

    def _pull(self, deadline: float, store_ids: list[int] | None, stop: GracefulStop) -> None:
        try:
            self.report = feeds_pull(deadline=deadline, store_ids=store_ids, until_empty=True, stopping=stop)
        except Exception as exc:  # the round is then not idle; the next one reads again
            log.exception("feed reader crashed")
            self.report = PullReport(errors=[f"feed reader crashed: {type(exc).__name__}: {exc}"])
        finally:
            connections.close_all()

    def is_alive(self) -> bool:
        return self._runner.is_alive()

    def join(self, stop: GracefulStop) -> PullReport:
        # The readers see the stop themselves and finish their lot; past the grace, the thread is left behind.
        self._runner.join(timeout=None if stop.seconds_left() == math.inf else stop.seconds_left())
        return self.report or PullReport(errors=["feed reader did not finish in time"])


class SyncStop(GracefulStop):
    """A graceful stop of `sync`: asked by a signal (and passed on to its worker processes), or, in a worker,
    because the `sync` process that started it is gone."""

    def __init__(self, *, grace: float, parent: int | None = None) -> None:
        super().__init__(grace=grace)
        self.parent = parent
        self.workers: list[int] = []  # pids of the worker processes to pass a stop on to

    def request(self) -> None:
        first = self.requested_at is None
        super().request()
        if first:
            self.pass_on()

    def pass_on(self) -> None:
        for pid in self.workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def __call__(self) -> bool:
        if self.parent is not None and self.requested_at is None and os.getppid() != self.parent:
            self.request()  # `sync` is gone: finish the orders in hand rather than work on alone
        return super().__call__()


class _FeedWatch:
    """Which stores answered in this run, and which `sync` gave up on (blocked, or never reachable)."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self.note = note
        self.answered: set[int] = set()
        self.misses: Counter[int] = Counter()
        self.given_up: dict[int, FeedProblem] = {}
        self.blocked: dict[int, str] = {}
        self.seen_busy: set[tuple[str, str]] = set()

    def readable(self, scope: list[int] | None) -> list[int] | None:
        return self._without(scope, set(self.given_up))

    def workable(self, scope: list[int] | None) -> list[int] | None:
        # Orders of a store that cannot be reached would only use up their attempts.
        return self._without(scope, {pk for pk, problem in self.given_up.items() if problem.connection})

    @staticmethod
    def _without(scope: list[int] | None, left_out: set[int]) -> list[int] | None:
        if not left_out:
            return scope
        ids = scope if scope is not None else Store.objects.filter(enabled=True).values_list("pk", flat=True)
        return [pk for pk in ids if pk not in left_out]

    def update(self, report: PullReport) -> bool:
        """Take in a round's report; True when a store was given up in it."""
        for busy in report.busy:
            if (busy.store, busy.holder) not in self.seen_busy:
                self.seen_busy.add((busy.store, busy.holder))
                self.note(busy.text)
        for text in report.notes:
            self.note(text)
        self.answered.update(report.answered)
        for store_id in report.answered:
            self.misses.pop(store_id, None)
        latest = {problem.store_id: problem for problem in report.problems}
        gave_up = False
        for store_id, problem in latest.items():
            if store_id in self.given_up:
                continue
            if not problem.connection:  # 401/403/404: stays so until someone acts
                legacy = [text for text in report.blocked if text.startswith(f"{problem.store}: ")]
                self.given_up[store_id], self.blocked[store_id] = problem, (legacy or [problem.line()])[0]
                gave_up = True
            elif store_id not in self.answered:
                # Never answered in this run: more likely a wrong URL than a blip, so only a couple of quick retries.
                self.misses[store_id] += 1
                if self.misses[store_id] >= FAIL_FAST_ROUNDS:
                    self.given_up[store_id], self.blocked[store_id] = problem, problem.line()
                    gave_up = True
                else:
                    self.note(f"{problem.line()}; trying again ({self.misses[store_id]}/{FAIL_FAST_ROUNDS - 1})")
        return gave_up


class _Ticker:
    """Calls `emit` with a progress line every `every` seconds, from the thread that calls it."""

    def __init__(self, *, every: float, emit: Callable[[str], None] | None, store_ids: list[int] | None) -> None:
        self.every, self.emit, self.store_ids = every, emit, store_ids
        self.started, self.since = time.monotonic(), timezone.now()
        self.next = self.started + every

    def __call__(self) -> None:
        now = time.monotonic()
        if self.emit is None or self.every <= 0 or now < self.next:
            return
        self.next = now + self.every
        self.emit(sync_progress(store_ids=self.store_ids, since=self.since, seconds=now - self.started).line())


def sync_until_idle(*, timeout: float, store_ids: Iterable[int] | None = None, stop: SyncStop | None = None,
                    on_note: Callable[[str], None] | None = None, progress_every: float = 0.0) -> SyncResult:
    """Pull and dispatch side by side until the feeds are empty, nothing is owed to VTEX and no order has work left.

    Orders waiting out a backoff count as work (we wait); parked orders do not. A stored event whose commit
    failed is owed while VTEX may still hold its item (feeds/handles.py): the item is hidden, so a round reads
    nothing, yet the feed is not empty. A feed that answers 401/403/404, or that could not be reached in
    FAIL_FAST_ROUNDS rounds without ever answering, is left out of later rounds and the run is not idle.
    `stop`: a graceful stop (SIGINT/SIGTERM); `on_note`: lines for the person watching (who holds a feed,
    retries, progress every `progress_every` seconds).
    """
    scope = list(store_ids) if store_ids is not None else None
    started = time.monotonic()
    deadline = started + timeout
    stop = stop or SyncStop(grace=stop_grace_seconds(store_ids=scope))
    watch = _FeedWatch(on_note or (lambda text: None))
    tick = _Ticker(every=progress_every, emit=on_note, store_ids=scope)
    result = SyncResult(idle=False)
    while time.monotonic() < deadline and not stop():
        # Owed as of the round's start: an item that reappears after the round's last read must not be missed.
        round_started = timezone.now()
        puller: Puller | None = None
        try:
            pull_ids, work_ids = watch.readable(scope), watch.workable(scope)
            puller = Puller(deadline=deadline, store_ids=pull_ids, stop=stop) if pull_ids != [] else None
            # The round ends once the feeds are read and no order is left that this process could take: orders
            # another process holds are its work, and waiting on them (a dead worker's, until they are freed) would
            # keep this one from the feed. The next round reads the feed again, and frees dead local claims first.
            dispatched = orders_dispatch(
                deadline=deadline, store_ids=work_ids, stop=stop, tick=tick,
                stop_when=lambda: ((puller is None or not puller.is_alive())
                                   and not work_pending(store_ids=work_ids, unheld=True)),
            )
            report = puller.join(stop) if puller is not None else PullReport()
            result.dispatch.outcomes.update(dispatched.outcomes)
            result.pulls.append(report)
            result.owed = handles_owed(store_ids=pull_ids, now=round_started) if pull_ids != [] else 0
            gave_up = watch.update(report)
            tick()
            if stop():
                result.stopped = True
                break
            if gave_up:
                continue  # this round's errors came from the store now left out: look again without it
            # Idle only when a whole round read nothing and worked no order: start-handling itself adds events to
            # the feed, maybe after the round's last read.
            # A round cut short by the deadline may have read nothing because it had no time to: that is a timeout.
            if (report.read == 0 and not dispatched.processed and not report.errors and not report.stores_busy
                    and not result.owed and time.monotonic() < deadline and not work_pending(store_ids=work_ids)):
                result.idle = not watch.given_up
                break
        except DatabaseError as exc:
            # The database went away mid-round (a restart, a killed connection): reconnect and do the round again.
            if puller is not None:
                puller.join(stop)
            database_lost(None, "sync round", exc)
            continue
        # A round that did nothing while others hold the work: look again in a second, not in a tight loop.
        if (report.errors or report.stores_busy or (result.owed and not report.read)
                or (not report.read and not dispatched.processed)):
            _pause(min(1.0, max(0.0, deadline - time.monotonic())), stop)
    result.stopped = result.stopped or stop()
    result.blocked = sorted(watch.blocked.values())
    result.problems = [problem.line() for problem in watch.given_up.values()]
    result.seconds = time.monotonic() - started
    return result


def _pause(seconds: float, stop: GracefulStop) -> None:
    """Sleep, waking early for a stop (polled: an Event set from a signal handler could deadlock)."""
    until = time.monotonic() + seconds
    while not stop() and (left := until - time.monotonic()) > 0:
        time.sleep(min(0.1, left))


def sync_workers_default() -> int:
    """The cores this process may use: `sync` runs one worker process per core unless told otherwise."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def sync_with_workers(*, workers: int, timeout: float, store_ids: Iterable[int] | None = None,
                      stop: SyncStop | None = None, on_note: Callable[[str], None] | None = None,
                      progress_every: float = 0.0) -> SyncResult:
    """sync_until_idle on `workers` processes: this one (which prints the notes) and workers-1 forked ones.

    They share the work through the database as the job runs do (orders claimed one by one, each feed
    leased to one process), so each can stop or die without harm. Idle when every worker is idle.
    """
    scope = list(store_ids) if store_ids is not None else None
    stop = stop or SyncStop(grace=stop_grace_seconds(store_ids=scope))
    run = {"timeout": timeout, "store_ids": scope}
    latest = time.monotonic() + timeout + stop.grace + STOP_MARGIN_SECONDS  # no worker may outlast this
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return sync_until_idle(**run, stop=stop, on_note=on_note, progress_every=progress_every)
    connections.close_all()  # each worker opens its own connections
    context = multiprocessing.get_context("fork")
    children = []
    for n in range(1, workers):
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_sync_worker, args=(send, os.getpid(), stop.grace, run), name=f"sync-{n}",
                                daemon=True)
        child.start()
        send.close()
        children.append((child, receive))
        stop.workers.append(child.pid)
    if stop():  # asked while the workers were starting: the later ones were not told yet
        stop.pass_on()
    threading.Thread(target=_reap, args=([child for child, _ in children],), name="reap", daemon=True).start()
    try:
        result = sync_until_idle(**run, stop=stop, on_note=on_note, progress_every=progress_every)
    except BaseException:
        for child, _ in children:
            child.kill()  # no one would read their results; the next run frees their claims at once
        raise
    for n, (child, receive) in enumerate(children, start=1):
        theirs = _worker_result(child, receive, latest=latest, stop=stop)
        for report in theirs.pulls if theirs is not None and on_note is not None else ():
            for text in report.notes:  # what only that worker saw, e.g. a feed it took over from a dead process
                on_note(f"worker {n}: {text}")
        if theirs is None:
            theirs = SyncResult(idle=False, problems=[
                f"sync worker {n} (pid {child.pid}) ended without a report: the orders it held were taken up by "
                "the others, but feed items it had read and not stored stay hidden by VTEX until the feed's "
                "visibility timeout: run sync again after it"])
        result.merge(theirs)
        child.join(timeout=5)
    return result


def _reap(children: list[multiprocessing.process.BaseProcess]) -> None:
    """Collect each worker as soon as it exits: a zombie looks alive, so its claims and leases would wait for
    their expiry instead of being freed by the next heartbeat (core.leases.holder_is_gone)."""
    # Every child asked on each pass (is_alive() reaps an exited one): any() over a generator would stop at the
    # first live child and never reap a later one, so with three workers a killed one stayed a zombie.
    while any([child.is_alive() for child in children]):
        time.sleep(0.5)


def _worker_result(child: multiprocessing.process.BaseProcess, receive: Any, *, latest: float,
                   stop: SyncStop) -> SyncResult | None:
    """A worker's result; it may still be finishing the orders in hand (started with the same timeout, it
    ends about when this process does), so wait for it, up to `latest` or the end of a stop's grace."""
    while True:
        if receive.poll(0.1):
            try:
                return receive.recv()
            except EOFError:  # died without a report
                return None
        if not child.is_alive() and not receive.poll(0):
            return None
        if stop.seconds_left() <= 0 or time.monotonic() > latest:
            child.kill()  # its claims and leases are freed at once by the next run on this host
            return None


def _sync_worker(send: Any, parent: int, grace: float, run: dict[str, Any]) -> None:
    stop = SyncStop(grace=grace, parent=parent)
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Ctrl-C reaches every worker, and `sync` passes SIGTERM on: each finishes its orders in hand.
        signal.signal(signum, lambda *_: stop.request())
    try:
        result = sync_until_idle(**run, stop=stop)
    except Exception as exc:  # reported to `sync`, which is then not idle
        log.exception("sync worker crashed")
        result = SyncResult(idle=False, problems=[f"sync worker crashed: {type(exc).__name__}: {exc}"])
    finally:
        connections.close_all()
    send.send(result.compact())  # small: a pipe holds 64 KB before a send blocks
    send.close()
