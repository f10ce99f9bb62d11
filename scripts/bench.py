#!/usr/bin/env python
"""End-to-end benchmark: the sandbox VTEX + ERP in its own process, the hub on 1, 2, 4… worker processes.

    make bench                                            # 10,000 orders, 20 ms per call, workers 1,2,4
    .venv/bin/python scripts/bench.py --orders 600 --workers 1,2 --baseline 100 --kill
    .venv/bin/python scripts/bench.py --mode qcluster --workers 1,2,4

Each worker count is one run in a fresh throwaway database (`<DATABASE_URL's name>_bench`, dropped after)
and a fresh sandbox holding `--orders` ready-for-handling orders, in a fresh benchmark process:
- `--mode sync`: orders.cycle.sync_with_workers(workers=n), as `manage.py sync --workers n`;
- `--mode qcluster`: n job clusters (`manage.py qcluster`, each HUB_Q_WORKERS=4), HUB_DISPATCH_RUNS=n: the
  "add a process (or a machine)" way to scale; the pull runs stay at their default.
Before them, `--baseline N` orders go through a plain sequential consumer written from VTEX's guide
(scripts/bench_baseline.py) against its own sandbox, so each run's gain is a ratio.

Each run prints orders/s end to end, event→ERP and stored→ERP p50/p95/p99, SQL statements and hub CPU ms per
order (every hub process), peak RSS per process and the largest one at 10/50/90 % of the backlog, and checks
that no order was lost or sent twice with a new key, that each was start-handled exactly once and that every
feed handle was committed. `--kill` SIGKILLs one worker process at 30 % and times the recovery. A table
of every run closes the output; the exit code is 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import mmap
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KILL_AT = 0.30  # share of the orders start-handled when --kill strikes
RECOVERY_TARGET_SECONDS = 30.0  # issue 9
MILESTONES = (0.10, 0.50, 0.90)  # where the memory profile is read
QCLUSTER_WORKERS = 4  # per cluster: a dispatch run, a pull run (or its stand-by), two for the other schedules
MONITOR_THREAD = "bench-monitor"  # its queries are the benchmark's, not the hub's: not counted
APP_KEY, APP_TOKEN = "vtexappkey-sandbox-HUB", "sandbox-token"  # the sandbox's own, not secrets


# ---- small helpers -----------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 60) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine so far (all processes, all cores), from /proc/stat."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, …]; None when the process is gone."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_cpu_seconds(pid: int) -> float:
    parts = _stat(pid)
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK") if parts else 0.0


def group_pids(pgids: set[int]) -> list[int]:
    return [int(entry) for entry in os.listdir("/proc")
            if entry.isdigit() and (parts := _stat(entry)) and int(parts[2]) in pgids]


def group_cpu_seconds(pgids: set[int]) -> float:
    """CPU time of every live process of these process groups, plus what they reaped (a recycled job worker)."""
    total = 0
    for pid in group_pids(pgids):
        if parts := _stat(pid):
            total += sum(int(x) for x in parts[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += [int(x) for x in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            pass
    return found


def memory_kb(pid: int) -> tuple[int, int]:
    """(resident now, peak resident) in kB; (0, 0) when the process is gone."""
    rss = hwm = 0
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def bench_database(url: str | None = None, suffix: str = "_bench") -> tuple[str, Callable[[], None]]:
    """A fresh database next to `url` (default: DATABASE_URL), named `<its name><suffix>`, and a function that
    drops it. Each script has its own suffix, so two benchmarks run at once do not drop each other's database."""
    url = os.environ.get("DATABASE_URL", "") if url is None else url
    if url.startswith(("postgres://", "postgresql://")):
        import psycopg

        base, _, name = url.rpartition("/")
        name, _, query = name.partition("?")  # options such as ?conn_max_age=60 stay on the bench database's URL
        bench_name = f"{name or 'integrationhub'}{suffix}"
        admin = f"{base}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{bench_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{bench_name}"')

        def drop() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{bench_name}" WITH (FORCE)')

        return f"{base}/{bench_name}" + (f"?{query}" if query else ""), drop
    folder = tempfile.mkdtemp(prefix="hub-bench-")
    return f"sqlite:///{folder}/bench.sqlite3", lambda: shutil.rmtree(folder, ignore_errors=True)


def bench_environment() -> None:
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only")
    # Run as `python scripts/bench.py` too, not only through `make bench`: without DEBUG Django needs
    # allowed hosts, and `vtex_sandbox` exists only with HUB_SANDBOX.
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost")
    os.environ.setdefault("HUB_SANDBOX", "1")
    # The throwaway database's tokens need a key, not the one in a developer's .env (the environment wins).
    os.environ.setdefault("HUB_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrationhub.settings")
    os.environ.setdefault("HUB_LOG_LEVEL", "WARNING")


def sandbox_start(*, orders: int, latency_ms: float, log: Path) -> tuple[subprocess.Popen, str]:
    """`manage.py vtex_sandbox` with `orders` ready-for-handling orders, once its feed holds them all."""
    port = free_port()
    sandbox = subprocess.Popen(
        [sys.executable, "manage.py", "vtex_sandbox", "--port", str(port), "--orders", str(orders),
         "--latency-ms", str(latency_ms), "--seed", "1", "--app-key", APP_KEY, "--app-token", APP_TOKEN],
        cwd=ROOT, env={**os.environ, "DJANGO_DEBUG": "1"}, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if get_json(f"{url}/_sandbox/stats", timeout=2)["queue"] >= orders:
                return sandbox, url
        except OSError:
            pass
        if sandbox.poll() is not None:
            break
        time.sleep(0.2)
    sandbox.kill()
    raise SystemExit(f"the sandbox did not come up: {log.read_text()[-2000:]}")


def sandbox_stop(sandbox: subprocess.Popen) -> None:
    sandbox.terminate()
    try:
        sandbox.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sandbox.kill()
        sandbox.wait()


# ---- counting SQL in every hub process ---------------------------------------------------------------------------

class QueryCounter:
    """Counts the SQL statements of this process and of every process forked from it (sync's workers, a job
    cluster's), one 8-byte file per process in `folder`, mapped in memory so a SIGKILL loses nothing.

    No lock is shared between processes: a worker killed while counting must not block the others.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a lock held by another thread at the fork stays held

    def _reset(self) -> None:
        self._lock, self._map, self._count = threading.Lock(), None, 0

    def install(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        """connection_created receiver; a reconnecting connection object keeps its wrappers, so add once."""
        if self not in connection.execute_wrappers:
            connection.execute_wrappers.append(self)

    def __call__(self, execute: Callable, sql: Any, params: Any, many: bool, context: dict) -> Any:
        if threading.current_thread().name != MONITOR_THREAD:
            with self._lock:
                if self._map is None:
                    # A random suffix: a pid can be reused by a later worker within one run.
                    path = os.path.join(self.folder, f"{os.getpid()}-{uuid.uuid4().hex}")
                    with open(path, "wb") as f:
                        f.write(bytes(8))
                    with open(path, "r+b") as f:
                        self._map = mmap.mmap(f.fileno(), 8)
                self._count += 1
                struct.pack_into("q", self._map, 0, self._count)
        return execute(sql, params, many, context)

    def total(self) -> int:
        count = 0
        for name in os.listdir(self.folder):
            with open(os.path.join(self.folder, name), "rb") as f:
                data = f.read(8)
            count += struct.unpack("q", data)[0] if len(data) == 8 else 0
        return count


def pg_transactions() -> int | None:
    """Transactions PostgreSQL counted for this database (pg_stat_database), a cross-check of the SQL count."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


# ---- watching a run: progress, memory, the kill --------------------------------------------------------------------

class Monitor(threading.Thread):
    """Once a second: progress (start-handling 204s at the sandbox) and the RSS of every hub process. With
    `kill`, SIGKILLs the worker holding the most order claims once KILL_AT of the orders are done, then times
    the recovery. It opens no database connection before the kill: in `sync` mode the workers are forked
    after it starts, and a fork must not copy a connection in use.
    """

    def __init__(self, *, url: str, orders: int, hub_pids: Callable[[], list[int]],
                 victims: Callable[[], list[int]], kill: bool) -> None:
        super().__init__(name=MONITOR_THREAD, daemon=True)
        self.url, self.orders, self.hub_pids, self.victims, self.kill = url, orders, hub_pids, victims, kill
        self.started = time.monotonic()
        self.progress = 0.0
        self.samples: list[tuple[float, float, dict[int, int]]] = []  # (seconds, progress, {pid: RSS kB})
        self.peak_kb: dict[int, int] = {}  # VmHWM, the kernel's own peak per process
        self.kill_report: dict[str, Any] = {}
        self._killed: dict[str, Any] | None = None
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)

    def run(self) -> None:
        from django.db import connections

        self.started = time.monotonic()
        try:
            next_sample = 0.0
            while not self._halt.is_set():
                if time.monotonic() >= next_sample:
                    next_sample = time.monotonic() + 1.0
                    self._sample()
                if self.kill and self.kill_report.get("recovered_seconds") is None:
                    try:
                        self._kill_step()
                    except Exception as exc:  # a failed measurement shows in the report; sampling goes on
                        self.kill_report["error"] = f"{type(exc).__name__}: {exc}"
                        self.kill = False
                self._halt.wait(0.2)
        finally:
            connections.close_all()

    def _sample(self) -> None:
        try:
            self.progress = get_json(f"{self.url}/_sandbox/stats", timeout=10)["start_handling_204"] / self.orders
        except OSError:
            pass
        rss: dict[int, int] = {}
        for pid in self.hub_pids():
            now_kb, peak_kb = memory_kb(pid)
            if now_kb:
                rss[pid] = now_kb
                self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), peak_kb)
        self.samples.append((time.monotonic() - self.started, self.progress, rss))

    def _kill_step(self) -> None:
        from django.db.models import Max, Q
        from django.utils import timezone

        from core.leases import LeaseHolder
        from core.models import JobLease
        from orders.models import OrderSync

        if self._killed is None:
            if self.progress < KILL_AT:
                return
            candidates = set(self.victims())
            if not candidates:
                self.kill_report = {"skipped": "no worker process to kill (needs --workers 2 or more)",
                                    "recovered_seconds": -1}
                return
            holders: Counter[str] = Counter(OrderSync.objects.exclude(claimed_by="")
                                            .values_list("claimed_by", flat=True))
            per_pid: Counter[int] = Counter()
            for holder, claims in holders.items():
                if (pid := LeaseHolder.parse(holder).pid) in candidates:
                    per_pid[pid] += claims
            if not per_pid:
                return  # no worker holds a claim at this instant: look again in 0.2 s
            pid = per_pid.most_common(1)[0][0]
            mine = [holder for holder in holders if LeaseHolder.parse(holder).pid == pid]
            before = set(OrderSync.objects.filter(claimed_by__in=mine, handling_started_at=None)
                         .values_list("pk", flat=True))
            leases = list(JobLease.objects.filter(holder__in=mine, held_until__gte=timezone.now())
                          .values_list("name", flat=True))
            os.kill(pid, signal.SIGKILL)
            at, wall = time.monotonic(), timezone.now()
            after = set(OrderSync.objects.filter(claimed_by__in=mine).values_list("pk", flat=True))
            # Claimed at the kill: held just before or just after it, and not start-handled before it.
            affected = list(OrderSync.objects.filter(pk__in=before | after)
                            .filter(Q(handling_started_at=None) | Q(handling_started_at__gte=wall))
                            .values_list("pk", flat=True))
            self._killed = {"pid": pid, "holders": mine, "at": at, "wall": wall, "affected": affected}
            self.kill_report = {"pid": pid, "at_seconds": at - self.started, "progress": self.progress,
                                "claims": len(affected), "leases": leases, "claims_freed_seconds": None,
                                "reaped_seconds": None, "recovered_seconds": None}
            return
        killed, now = self._killed, time.monotonic()
        if self.kill_report["reaped_seconds"] is None and _stat(killed["pid"]) is None:
            # Until its parent reaps it, a dead worker is a zombie, which core.leases.holder_is_gone counts as alive.
            self.kill_report["reaped_seconds"] = now - killed["at"]
        if self.kill_report["claims_freed_seconds"] is None and not OrderSync.objects.filter(
                claimed_by__in=killed["holders"]).exists():
            self.kill_report["claims_freed_seconds"] = now - killed["at"]
        rows = OrderSync.objects.filter(pk__in=killed["affected"])
        if not rows.filter(handling_started_at=None).exists():
            last = rows.aggregate(last=Max("handling_started_at"))["last"]
            self.kill_report["recovered_seconds"] = (last - killed["wall"]).total_seconds() if last else 0.0

    def memory_profile(self) -> list[dict[str, Any]]:
        """The largest hub process and all of them together, when 10/50/90 % of the orders were done."""
        profile = []
        for mark in MILESTONES:
            sample = next((s for s in self.samples if s[1] >= mark and s[2]), None)
            if sample is not None:
                profile.append({"at": mark, "largest_mb": max(sample[2].values()) / 1024,
                                "total_mb": sum(sample[2].values()) / 1024, "processes": len(sample[2])})
        return profile


# ---- one run: a fresh database, a fresh sandbox, one worker count ---------------------------------------------------

def run_sync(*, workers: int, timeout: float, monitor: Monitor) -> dict[str, Any]:
    import multiprocessing

    from orders.cycle import sync_with_workers

    own_before = resource.getrusage(resource.RUSAGE_SELF)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    monitor.start()
    result = sync_with_workers(workers=workers, timeout=timeout)
    elapsed = time.monotonic() - started
    for child in multiprocessing.active_children():  # reaped, so their CPU and peak RSS count as children's
        child.join(timeout=30)
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(getattr(now, f) - getattr(before, f) for now, before in ((own, own_before), (children, children_before))
              for f in ("ru_utime", "ru_stime"))
    killed = monitor.kill_report.get("pid")
    # A killed worker never reports, so `sync` is not idle, rightly; the run still counts as finished if
    # that is the only problem (the orders are checked below).
    others = [p for p in result.problems if not (killed and f"(pid {killed})" in p)]
    return {"seconds": elapsed, "cpu": cpu, "finished": result.idle or (bool(killed) and not others),
            "problems": result.problems, "rss_main_mb": own.ru_maxrss / 1024,
            # The largest reaped child: the sandbox is still running, so a worker.
            "rss_worker_mb": children.ru_maxrss / 1024 if workers > 1 else None}


def run_qcluster(*, workers: int, orders: int, timeout: float, monitor: Monitor, url: str, counter_dir: str,
                 clusters: list[subprocess.Popen]) -> dict[str, Any]:
    """Start `workers` job clusters and wait until every order has handling started and every handle is committed.

    The time counts from the first event a cluster stored, so the start of the clusters is not throughput.
    """
    from django.core.management import call_command
    from django.db.models import Max, Min

    from core.jobs import job_continue
    from feeds.models import FeedEvent
    from orders.models import OrderSync

    call_command("setup_schedules", stdout=open(os.devnull, "w"))
    # Start the pull and dispatch chains now rather than at the scheduler's next look (every 30 s); each
    # run queues more until every slot is busy (core/jobs.py).
    job_continue("feeds.tasks.pull_feeds")
    job_continue("orders.tasks.dispatch_orders")
    started = time.monotonic()
    env = {**os.environ, "HUB_DISPATCH_RUNS": str(workers), "HUB_Q_WORKERS": str(QCLUSTER_WORKERS)}
    for n in range(workers):
        clusters.append(subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--qcluster-counting", counter_dir], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=(Path(counter_dir).parent / f"cluster-{n}.log").open("wb"),
            start_new_session=True))
    pgids = {cluster.pid for cluster in clusters}
    monitor.start()
    finished = False
    while time.monotonic() - started < timeout:
        stats = get_json(f"{url}/_sandbox/stats")
        if (stats["start_handling_204"] >= orders and stats["queue"] == 0
                and OrderSync.objects.filter(state="handling_started").count() >= orders):
            finished = True
            break
        time.sleep(0.5)
    cpu = group_cpu_seconds(pgids)
    first = FeedEvent.objects.aggregate(first=Min("received_at"))["first"]
    last = OrderSync.objects.aggregate(last=Max("handling_started_at"))["last"]
    elapsed = (last - first).total_seconds() if first and last else time.monotonic() - started
    peak = max(monitor.peak_kb.values(), default=0) / 1024
    return {"seconds": elapsed, "cpu": cpu, "finished": finished, "problems": [], "rss_main_mb": None,
            "rss_worker_mb": peak, "processes": len(group_pids(pgids))}


def clusters_stop(clusters: list[subprocess.Popen]) -> None:
    for cluster in clusters:
        try:
            os.killpg(cluster.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        cluster.wait(timeout=10)


def one_run(args: argparse.Namespace) -> int:
    """One worker count, in this (fresh) process; writes its figures to args.run_one as JSON."""
    workers = int(args.workers)
    db_url, drop_db = bench_database()
    os.environ["DATABASE_URL"] = db_url
    if args.concurrency:
        os.environ["HUB_DISPATCH_CONCURRENCY"] = str(args.concurrency)

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, connections
    from django.db.backends.signals import connection_created

    call_command("migrate", verbosity=0)
    logging.getLogger("django-q").setLevel(logging.WARNING)  # not a line per task queued
    scratch = Path(tempfile.mkdtemp(prefix="hub-bench-run-"))
    counter_dir = scratch / "queries"
    counter_dir.mkdir()
    counter = QueryCounter(str(counter_dir))
    connection_created.connect(counter.install, weak=False)
    sandbox, url = sandbox_start(orders=args.orders, latency_ms=args.latency_ms, log=scratch / "sandbox.log")
    clusters: list[subprocess.Popen] = []
    try:
        from core.stores import store_connect
        from feeds.models import FeedEvent
        from orders.models import OrderSync

        store_connect(name="bench", account="sandbox", app_key=APP_KEY, app_token=APP_TOKEN, base_url=url,
                      erp_url=f"{url}/erp/orders")
        connections.close_all()  # reconnect with the counter in place; no connection crosses the fork
        time.sleep(1.0)  # PostgreSQL counts a backend's transactions when it ends, or within a second of idling
        transactions_before = pg_transactions()
        connections.close_all()

        if args.mode == "sync":
            me = os.getpid()
            monitor = Monitor(url=url, orders=args.orders, kill=args.kill,
                              hub_pids=lambda: [me] + [p for p in child_pids(me) if p != sandbox.pid],
                              victims=lambda: [p for p in child_pids(me) if p != sandbox.pid])
        else:
            monitor = Monitor(url=url, orders=args.orders, kill=args.kill,
                              hub_pids=lambda: group_pids({c.pid for c in clusters}),
                              victims=lambda: [p for p in group_pids({c.pid for c in clusters})
                                               if p not in {c.pid for c in clusters}])
        get_json(f"{url}/_sandbox/stats")  # imports what the monitor needs before sync forks
        sandbox_cpu_before, machine_cpu_before = process_cpu_seconds(sandbox.pid), machine_cpu_seconds()
        started = time.monotonic()
        if args.mode == "sync":
            run = run_sync(workers=workers, timeout=args.timeout, monitor=monitor)
        else:
            run = run_qcluster(workers=workers, orders=args.orders, timeout=args.timeout, monitor=monitor, url=url,
                               counter_dir=str(counter_dir), clusters=clusters)
        queries = counter.total()
        monitor.stop()
        clusters_stop(clusters)
        sandbox_cpu = process_cpu_seconds(sandbox.pid) - sandbox_cpu_before
        machine_cpu = machine_cpu_seconds() - machine_cpu_before
        wall = time.monotonic() - started  # the CPU figures cover this whole window
        connections.close_all()
        time.sleep(1.0)  # PostgreSQL writes a backend's statistics when it ends, or within a second of idling
        transactions = pg_transactions()

        deliveries = get_json(f"{url}/_sandbox/erp/deliveries")
        stats = get_json(f"{url}/_sandbox/stats")
        ready_events = {e.order_id: e for e in FeedEvent.objects.filter(state="ready-for-handling", duplicate_of=None)}
        first_delivery: dict[str, float] = {}
        keys: dict[str, set[str]] = {}
        for d in deliveries:
            if d["event"] == "order.ready":
                first_delivery[d["order_id"]] = min(d["at"], first_delivery.get(d["order_id"], d["at"]))
                keys.setdefault(d["order_id"], set()).add(d["idempotency_key"])
        to_erp = [first_delivery[o] - e.current_change.timestamp() for o, e in ready_events.items()
                  if o in first_delivery]
        stored_to_erp = [first_delivery[o] - e.received_at.timestamp() for o, e in ready_events.items()
                         if o in first_delivery]
        handled = OrderSync.objects.filter(state="handling_started").count()
        uncommitted = FeedEvent.objects.filter(source="feed", committed_at=None).count()
        kill = monitor.kill_report

        checks = {
            "lost": args.orders - handled,
            "doubled": sum(1 for k in keys.values() if len(k) > 1),
            "start_handling_once": stats["start_handling_204"] == args.orders
            and stats["orders"] == {"handling": args.orders},
            "handles_committed": stats["queue"] == 0 and uncommitted == 0,
            "finished": run["finished"],
        }
        if args.kill and "skipped" not in kill:
            checks["recovered"] = (kill.get("recovered_seconds") is not None
                                   and kill["recovered_seconds"] <= RECOVERY_TARGET_SECONDS)
        ok = (checks["lost"] == 0 and checks["doubled"] == 0
              and all(v for k, v in checks.items() if k not in ("lost", "doubled")))
        figures = {
            "mode": args.mode, "workers": workers, "orders": args.orders, "handled": handled,
            "seconds": run["seconds"], "rate": handled / run["seconds"] if run["seconds"] else 0.0,
            "event_to_erp": [percentile(to_erp, p) for p in (50, 95, 99)] if to_erp else None,
            "stored_to_erp": [percentile(stored_to_erp, p) for p in (50, 95, 99)] if stored_to_erp else None,
            "queries_per_order": queries / max(1, handled), "queries": queries,
            "transactions_per_order": (transactions - transactions_before) / max(1, handled)
            if transactions is not None and transactions_before is not None else None,
            "cpu_ms_per_order": run["cpu"] / max(1, handled) * 1000, "hub_cpu": run["cpu"],
            "sandbox_cpu": sandbox_cpu, "machine_cpu": machine_cpu, "wall": wall,
            "rss_main_mb": run["rss_main_mb"], "rss_worker_mb": run["rss_worker_mb"],
            "processes": run.get("processes", workers), "memory": monitor.memory_profile(),
            "kill": {k: v for k, v in kill.items()}, "checks": checks, "ok": ok,
            "requests": stats["requests"], "problems": run["problems"],
            "feed_left": stats["queue"], "feed_hidden": stats["queue_hidden"], "hub_uncommitted": uncommitted,
        }
        print_run(figures, database=connection.vendor, concurrency=settings.HUB_DISPATCH_CONCURRENCY,
                  latency_ms=args.latency_ms)
        Path(args.run_one).write_text(json.dumps(figures))
        if not ok and args.mode == "qcluster":
            for log in sorted(scratch.glob("cluster-*.log")):
                print(f"--- {log.name} (last lines)\n{log.read_text()[-3000:]}")
        return 0 if ok else 1
    finally:
        from core.call_counts import call_counts_discard

        clusters_stop(clusters)
        sandbox_stop(sandbox)
        call_counts_discard()  # /metrics' call counts: the exit would write them to the dropped database
        connections.close_all()
        drop_db()
        shutil.rmtree(scratch, ignore_errors=True)


def _seconds(values: list[float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in values) + " s" if values else "—"


def print_run(f: dict[str, Any], *, database: str, concurrency: int, latency_ms: float) -> None:
    how = (f"sync_with_workers(workers={f['workers']})" if f["mode"] == "sync"
           else f"{f['workers']} qcluster(s) × {QCLUSTER_WORKERS} job workers, HUB_DISPATCH_RUNS={f['workers']}")
    print(f"\n== {f['mode']}, {f['workers']} worker(s): {how}; {database}, {concurrency} dispatch threads per "
          f"process, {latency_ms:g} ms per VTEX/ERP call")
    print(f"orders        {f['orders']} ready -> {f['handled']} handling started in {f['seconds']:.1f} s "
          f"(finished: {f['checks']['finished']})")
    print(f"throughput    {f['rate']:.1f} orders/s end to end")
    print(f"event->ERP    p50/p95/p99 {_seconds(f['event_to_erp'])} (from the event's currentChange; all events "
          "exist at start)")
    print(f"stored->ERP   p50/p95/p99 {_seconds(f['stored_to_erp'])} (from when the hub stored the event)")
    tx = f" ({f['transactions_per_order']:.1f} transactions per order, PostgreSQL's count)" \
        if f["transactions_per_order"] is not None else ""
    print(f"SQL           {f['queries_per_order']:.1f} statements per order ({f['queries']} in all, every hub "
          f"process){tx}")
    print(f"CPU           machine {f['machine_cpu']:.0f} s busy of {f['wall'] * os.cpu_count():.0f} s available "
          f"({os.cpu_count()} cores): hub {f['hub_cpu']:.0f} s, sandbox {f['sandbox_cpu']:.0f} s, "
          f"rest (database, OS, others) {f['machine_cpu'] - f['hub_cpu'] - f['sandbox_cpu']:.0f} s; "
          f"hub {f['cpu_ms_per_order']:.1f} ms CPU per order")
    if f["mode"] == "sync":
        worker = f", largest worker {f['rss_worker_mb']:.0f} MB" if f["rss_worker_mb"] else ""
        print(f"memory        peak RSS: main process {f['rss_main_mb']:.0f} MB{worker}")
    else:
        print(f"memory        peak RSS: largest of {f['processes']} cluster processes {f['rss_worker_mb']:.0f} MB")
    if f["memory"]:
        print("              RSS as the backlog drains: " + "; ".join(
            f"{m['at']:.0%} done: largest {m['largest_mb']:.0f} MB, {m['processes']} processes {m['total_mb']:.0f} MB"
            for m in f["memory"]))
    kill = f["kill"]
    if kill.get("skipped"):
        print(f"kill          skipped: {kill['skipped']}")
    elif kill:
        def after(key: str, none: str = "not while measured") -> str:
            return none if kill.get(key) is None else f"after {kill[key]:.1f} s"

        print(f"kill          SIGKILL pid {kill['pid']} at {kill['at_seconds']:.1f} s ({kill['progress']:.0%} done), "
              f"holding {kill['claims']} unfinished order(s) and {', '.join(kill['leases']) or 'no'} lease(s); "
              f"reaped by its parent {after('reaped_seconds')}; its claims taken over {after('claims_freed_seconds')}; "
              f"all its orders start-handled {after('recovered_seconds', 'never')} "
              f"(target {RECOVERY_TARGET_SECONDS:g} s)"
              + (f"; {kill['error']}" if "error" in kill else ""))
    c = f["checks"]
    print(f"checks        lost {c['lost']}, sent twice with a new key {c['doubled']}, start-handling 204 exactly "
          f"once each: {c['start_handling_once']}, every feed handle committed: {c['handles_committed']}"
          + (f", recovered within {RECOVERY_TARGET_SECONDS:g} s: {c['recovered']}" if "recovered" in c else "")
          + f"; {f['requests']} VTEX/ERP requests")
    if f["feed_left"] or f["hub_uncommitted"]:
        # Hidden: read by someone and not committed; VTEX shows them again after the feed's visibility timeout.
        print(f"feed left     {f['feed_left']} message(s) uncommitted in the sandbox's feed, "
              f"{f['feed_hidden']} of them hidden (read, never committed); "
              f"{f['hub_uncommitted']} stored event(s) the hub has not committed")
    if f["problems"]:
        print(f"sync said     {'; '.join(f['problems'])}")
    print("result        " + ("ok" if f["ok"] else "FAILED"))
    sys.stdout.flush()


def qcluster_counting(folder: str) -> None:
    """`manage.py qcluster` with every SQL statement of the cluster and its job workers counted in `folder`."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db.backends.signals import connection_created

    connection_created.connect(QueryCounter(folder).install, weak=False)
    call_command("qcluster")


# ---- the whole benchmark: baseline, one fresh process per worker count, the table ----------------------------------

def baseline(orders: int, latency_ms: float, timeout: float) -> dict[str, Any]:
    from bench_baseline import baseline_consume

    scratch = Path(tempfile.mkdtemp(prefix="hub-bench-baseline-"))
    sandbox, url = sandbox_start(orders=orders, latency_ms=latency_ms, log=scratch / "sandbox.log")
    try:
        result = baseline_consume(url=url, erp_url=f"{url}/erp/orders", app_key=APP_KEY, app_token=APP_TOKEN,
                                  timeout=timeout)
        stats = get_json(f"{url}/_sandbox/stats")
    finally:
        sandbox_stop(sandbox)
        shutil.rmtree(scratch, ignore_errors=True)
    ok = (result.orders == orders and stats["start_handling_204"] == orders and stats["queue"] == 0
          and stats["erp_unique_keys"] == orders)
    figures = {"orders": orders, "handled": result.orders, "seconds": result.seconds,
               "rate": result.orders / result.seconds, "cpu_ms_per_order": result.cpu_seconds / max(1, orders) * 1000,
               "calls": result.calls, "ok": ok}
    print(f"\n== baseline: a sequential consumer written from VTEX's guide (scripts/bench_baseline.py), "
          f"{orders} orders, {latency_ms:g} ms per call\n"
          f"throughput    {figures['rate']:.1f} orders/s ({result.orders} start-handled in {result.seconds:.1f} s, "
          f"{result.calls} calls); {figures['cpu_ms_per_order']:.1f} ms CPU per order\n"
          f"result        {'ok' if ok else 'FAILED'}")
    sys.stdout.flush()
    return figures


def print_table(runs: list[dict[str, Any]], base: dict[str, Any] | None) -> None:
    print("\n| run | orders/s | × baseline | event→ERP p50 / p95 / p99 | stored→ERP p50 / p95 / p99 | SQL per order "
          "| hub CPU per order | peak RSS main / largest worker | largest RSS at 10 / 50 / 90 % "
          "| recovery after a kill | checks |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    if base:
        print(f"| baseline (sequential, VTEX's guide), {base['orders']} orders | {base['rate']:.1f} | 1 | — | — | — "
              f"| {base['cpu_ms_per_order']:.1f} ms | — | — | — | {'ok' if base['ok'] else 'FAILED'} |")
    for f in runs:
        if "error" in f:
            print(f"| {f['mode']}, {f['workers']} worker(s) |" + " — |" * 9 + f" FAILED: {f['error']} |")
            continue
        ratio = f"{f['rate'] / base['rate']:.1f}" if base and base["rate"] else "—"
        if f["mode"] == "sync":
            rss = f"{f['rss_main_mb']:.0f} / " + (f"{f['rss_worker_mb']:.0f} MB" if f["rss_worker_mb"] else "— MB")
        else:
            rss = f"— / {f['rss_worker_mb']:.0f} MB ({f['processes']} processes)"
        memory = " / ".join(f"{m['largest_mb']:.0f}" for m in f["memory"]) + " MB" if f["memory"] else "—"
        kill = f["kill"]
        recovery = ("—" if not kill or kill.get("skipped") else
                    "never" if kill.get("recovered_seconds") is None else
                    f"{kill['recovered_seconds']:.1f} s ({kill['claims']} orders)")
        c = f["checks"]
        failed = [k for k, v in c.items() if (v if k in ("lost", "doubled") else not v)]
        checks = "ok" if f["ok"] else "FAILED: " + ", ".join(f"{k} {c[k]}" if k in ("lost", "doubled") else k
                                                              for k in failed)
        print(f"| `{f['mode']}`, {f['workers']} worker(s), {f['orders']} orders | {f['rate']:.1f} | {ratio} "
              f"| {_seconds(f['event_to_erp'])} | {_seconds(f['stored_to_erp'])} | {f['queries_per_order']:.1f} "
              f"| {f['cpu_ms_per_order']:.1f} ms | {rss} | {memory} | {recovery} | {checks} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--workers", default="1,2,4",
                        help="worker counts, one run each (sync: processes; qcluster: clusters)")
    parser.add_argument("--baseline", type=int, default=500, metavar="N",
                        help="orders for the sequential baseline consumer (0: none)")
    parser.add_argument("--kill", action="store_true",
                        help="in each run with 2+ workers, SIGKILL one worker at 30%% and time the recovery")
    parser.add_argument("--concurrency", type=int, default=None, help="HUB_DISPATCH_CONCURRENCY (default: settings)")
    parser.add_argument("--timeout", type=float, default=900, help="per run, seconds")
    parser.add_argument("--mode", choices=["sync", "qcluster"], default="sync",
                        help="sync: the engine of `manage.py sync --workers N`; qcluster: job clusters (production)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument("--run-one", metavar="RESULT", help=argparse.SUPPRESS)  # one run, in a fresh process
    parser.add_argument("--qcluster-counting", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    bench_environment()
    if args.qcluster_counting:
        qcluster_counting(args.qcluster_counting)
        return 0
    if args.run_one:
        return one_run(args)

    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        parser.error("--workers takes counts of 1 or more, e.g. 1,2,4")
    base = baseline(args.baseline, args.latency_ms, args.timeout) if args.baseline > 0 else None
    runs: list[dict[str, Any]] = []
    for workers in counts:
        with tempfile.NamedTemporaryFile(suffix=".json") as result:
            command = [sys.executable, str(Path(__file__).resolve()), "--run-one", result.name, "--mode", args.mode,
                       "--workers", str(workers), "--orders", str(args.orders), "--latency-ms", str(args.latency_ms),
                       "--timeout", str(args.timeout)]
            command += ["--concurrency", str(args.concurrency)] if args.concurrency else []
            command += ["--kill"] if args.kill else []
            try:
                # The run's own deadline is --timeout; the margin covers creating the sandbox and the database.
                subprocess.run(command, cwd=ROOT, timeout=args.timeout + 300)
                runs.append(json.loads(Path(result.name).read_text()))
            except (subprocess.TimeoutExpired, ValueError) as exc:
                runs.append({"mode": args.mode, "workers": workers, "ok": False,
                             "error": "timed out" if isinstance(exc, subprocess.TimeoutExpired) else "no figures"})
    print_table(runs, base)
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": base, "runs": runs}, indent=2, default=str))
    return 0 if all(r["ok"] for r in runs) and (base is None or base["ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())
