#!/usr/bin/env python
"""End-to-end benchmark: sandbox VTEX + ERP in its own process, the hub's `sync` cycle in this one.

    make bench                        # PostgreSQL if DATABASE_URL says so, else SQLite
    .venv/bin/python scripts/bench.py --orders 2000 --latency-ms 20

Prints orders/s end to end, p50/p95 from event to ERP delivery, SQL queries per order, peak
memory, and checks that nothing was lost or doubled. It uses a throwaway database of its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 60) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def _own_cpu() -> float:
    """This process plus its finished children (the feed readers `sync` forks); not the sandbox."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine so far (all processes, all cores), from /proc/stat."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    parts = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """CPU time of every live process in a process group (the cluster and its workers)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parts = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(parts[2]) == pgid:
                total += (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_qcluster(orders: int, timeout: float, started: float) -> tuple[float, float, bool]:
    """Start `manage.py qcluster` (as `make run` does) and wait until every order has handling started.

    The time counts from the first event the cluster stored, so the scheduler's start-up delay
    (django-q2 looks at schedules every 30 s) is not counted as throughput.
    """
    import signal

    from django.core.management import call_command
    from django.db.models import Max, Min

    from feeds.models import FeedEvent
    from orders.models import OrderSync

    call_command("setup_schedules", stdout=open(os.devnull, "w"))
    cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=os.environ.copy(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    finished, cpu = False, 0.0
    try:
        while time.monotonic() - started < timeout:
            if OrderSync.objects.filter(state="handling_started").count() >= orders:
                finished = True
                break
            time.sleep(0.5)
        cpu = group_cpu_seconds(cluster.pid)
    finally:
        os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait(timeout=10)
    first = FeedEvent.objects.aggregate(first=Min("received_at"))["first"]
    last = OrderSync.objects.aggregate(last=Max("handling_started_at"))["last"]
    elapsed = (last - first).total_seconds() if first and last else time.monotonic() - started
    return elapsed, cpu, finished


def bench_database(url: str | None = None, suffix: str = "_bench") -> tuple[str, callable]:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=None, help="HUB_DISPATCH_CONCURRENCY (default: settings)")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--mode", choices=["sync", "qcluster"], default="sync",
                        help="sync: `manage.py sync` in this process; qcluster: the job cluster, as in production")
    args = parser.parse_args()

    db_url, drop_db = bench_database()
    os.environ["DATABASE_URL"] = db_url
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only")
    # Run as `python scripts/bench.py` too, not only through `make bench`: without DEBUG Django needs
    # allowed hosts, and `vtex_sandbox` exists only with HUB_SANDBOX.
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost")
    os.environ.setdefault("HUB_SANDBOX", "1")
    # The throwaway database's tokens need a key, not the one in a developer's .env (the environment wins).
    os.environ.setdefault("HUB_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrationhub.settings")
    os.environ.setdefault("HUB_LOG_LEVEL", "WARNING")
    if args.concurrency:
        os.environ["HUB_DISPATCH_CONCURRENCY"] = str(args.concurrency)

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.db.backends.signals import connection_created

    call_command("migrate", verbosity=0)

    port = free_port()
    sandbox = subprocess.Popen(
        [sys.executable, "manage.py", "vtex_sandbox", "--port", str(port), "--orders", str(args.orders),
         "--latency-ms", str(args.latency_ms), "--seed", "1"],
        cwd=ROOT, env={**os.environ, "DJANGO_DEBUG": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if get_json(f"{url}/_sandbox/stats", timeout=2)["queue"] >= args.orders:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("the sandbox did not come up")

        from feeds.cycle import sync_until_idle
        from feeds.models import FeedEvent
        from feeds.stores import store_connect
        from orders.models import OrderSync

        store_connect(name="bench", account="sandbox", app_key="vtexappkey-sandbox-HUB", app_token="sandbox-token",
                      base_url=url, erp_url=f"{url}/erp/orders")

        # Shared memory: `sync` reads the feed in a forked child, whose queries count too.
        queries = multiprocessing.Value("q", 0)

        def count(execute, sql, params, many, context):
            with queries.get_lock():
                queries.value += 1
            return execute(sql, params, many, context)

        connection_created.connect(lambda sender, connection, **kw: connection.execute_wrappers.append(count),
                                   weak=False)
        connection.close()  # reconnect with the counter in place

        hub_cpu_before = _own_cpu()
        sandbox_cpu_before, machine_cpu_before = process_cpu_seconds(sandbox.pid), machine_cpu_seconds()
        started = time.monotonic()
        if args.mode == "sync":
            result = sync_until_idle(timeout=args.timeout)
            elapsed = time.monotonic() - started
            hub_cpu = _own_cpu() - hub_cpu_before
            idle = result.idle
        else:
            elapsed, hub_cpu, idle = run_qcluster(args.orders, args.timeout, started)
        sandbox_cpu = process_cpu_seconds(sandbox.pid) - sandbox_cpu_before
        machine_cpu = machine_cpu_seconds() - machine_cpu_before
        wall = time.monotonic() - started  # the CPU figures cover this whole window

        deliveries = get_json(f"{url}/_sandbox/erp/deliveries")
        stats = get_json(f"{url}/_sandbox/stats")
        ready_events = {e.order_id: e for e in FeedEvent.objects.filter(state="ready-for-handling", duplicate_of=None)}
        first_delivery: dict[str, float] = {}
        keys: dict[str, set[str]] = {}
        for d in deliveries:
            if d["event"] == "order.ready":
                first_delivery[d["order_id"]] = min(d["at"], first_delivery.get(d["order_id"], d["at"]))
                keys.setdefault(d["order_id"], set()).add(d["idempotency_key"])
        to_erp = [first_delivery[o] - e.current_change.timestamp() for o, e in ready_events.items() if o in first_delivery]
        received_to_erp = [first_delivery[o] - e.received_at.timestamp() for o, e in ready_events.items()
                           if o in first_delivery]
        handled = OrderSync.objects.filter(state="handling_started").count()
        doubled = sum(1 for k in keys.values() if len(k) > 1)
        lost = args.orders - handled
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        print(f"mode          {args.mode}  database {connection.vendor}  concurrency "
              f"{settings.HUB_DISPATCH_CONCURRENCY}  latency {args.latency_ms:g} ms per VTEX/ERP call")
        print(f"orders        {args.orders} ready -> {handled} handling started in {elapsed:.1f} s "
              f"(finished: {idle})")
        print(f"throughput    {handled / elapsed:.1f} orders/s end to end")
        if to_erp:
            print(f"event->ERP    p50 {statistics.median(to_erp):.2f} s  p95 {percentile(to_erp, 95):.2f} s "
                  "(from the event's currentChange; all events exist at start)")
            print(f"stored->ERP   p50 {statistics.median(received_to_erp):.2f} s  "
                  f"p95 {percentile(received_to_erp, 95):.2f} s (from when the hub stored the event)")
        if args.mode == "sync":
            print(f"SQL           {queries.value / max(1, args.orders):.1f} queries per order ({queries.value} in all)")
        else:
            print("SQL           not counted in qcluster mode (the queries run in the cluster's processes)")
        if args.mode == "sync":
            print(f"memory        peak RSS of the hub process {rss_mb:.0f} MB")
        print(f"CPU           machine {machine_cpu:.0f} s busy of {wall * os.cpu_count():.0f} s available "
              f"({os.cpu_count()} cores): hub {hub_cpu:.0f} s, sandbox {sandbox_cpu:.0f} s, "
              f"rest (database, OS) {machine_cpu - hub_cpu - sandbox_cpu:.0f} s; "
              f"hub {hub_cpu / max(1, handled) * 1000:.1f} ms CPU per order")
        print(f"VTEX calls    {stats['requests']} requests; start-handling 204: {stats['start_handling_204']}")
        print(f"checks        lost {lost}, sent twice with a new key {doubled}, "
              f"ERP deliveries {len(deliveries)} for {len(keys)} orders")
        return 0 if lost == 0 and doubled == 0 and idle else 1
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
        from django.db import connections

        connections.close_all()
        drop_db()


if __name__ == "__main__":
    sys.exit(main())
