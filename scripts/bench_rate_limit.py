#!/usr/bin/env python
"""Benchmark of the VTEX rate limiter (core/rate_limit.py): does a limit hold across processes, and what does it cost?

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/integrationhub .venv/bin/python scripts/bench_rate_limit.py
    .venv/bin/python scripts/bench_rate_limit.py --processes 4 --threads 8 --limit 600 --seconds 90

It creates a throwaway database next to DATABASE_URL's (`<name>_bench_rate_limit`; SQLite without one), starts the
sandbox VTEX in this process with --latency-ms on every call, and connects --stores stores on one VTEX account.
Then --processes worker processes (this script with --worker) each run --threads threads that call
GET /api/orders/feed/config through `vtex_client(store)` as fast as the limiter lets them, for --seconds, all
starting at the same moment; the workers take the stores in turn, so the stores share the account's budget.

It reports what the sandbox received (per minute, and the most in any 60 s window and in shorter windows, each
against the limiter's bound for that window) and what the limiter cost the workers: thread CPU µs and SQL
queries per call (the workers' threads run no other SQL). Exit status 1 if any window went over its bound.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ORDER = "1300000000001-01"  # every worker asks for this order: Get order is a route the limit is documented for

ACCOUNT = "sandbox"
APP_KEY = "vtexappkey-sandbox-HUB"
APP_TOKEN = "sandbox-token"
WINDOWS = (1, 10, 60)  # seconds; 60 is VTEX's, the shorter ones show the burst


def max_in_window(times: list[float], seconds: float) -> int:
    """The most of the sorted `times` that fall in any window [t, t + seconds)."""
    best, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - seconds:
            first += 1
        best = max(best, last - first + 1)
    return best


# --- worker: one process hammering the limiter ------------------------------------------------------------------

def worker(args: argparse.Namespace) -> int:
    """Call VTEX through the limiter on --threads threads until --start-at + --seconds; print one JSON line."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrationhub.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection, connections

    from core.models import Store
    from core.vtex.client import VtexUnavailable
    from core.vtex_account import vtex_client

    # Not in settings.py's environment list: set here, as a deployment would set the setting.
    settings.HUB_VTEX_REQUESTS_PER_MINUTE = args.limit
    settings.HUB_VTEX_RATE_LIMIT_MAX_WAIT_SECONDS = args.max_wait
    store = Store.objects.get(name=args.store)
    connections.close_all()  # each thread opens its own
    totals = {"ok": 0, "refused": 0, "errors": 0, "limiter_cpu_s": 0.0, "queries": 0}
    lock = threading.Lock()
    until = args.start_at + args.seconds

    def hammer() -> None:
        client = vtex_client(store)
        limiter, mine = client.before_call, dict.fromkeys(totals, 0)

        def timed(operation: str) -> None:  # thread CPU, so a wait (sleep) costs nothing
            started = time.thread_time()
            try:
                limiter(operation)
            finally:
                mine["limiter_cpu_s"] += time.thread_time() - started

        def count(execute: Callable, sql: str, params: Any, many: bool, context: dict) -> Any:
            mine["queries"] += 1
            return execute(sql, params, many, context)

        client.before_call = timed
        connection.ensure_connection()  # connecting is start-up, not the limiter's cost
        time.sleep(max(0.0, args.start_at - time.time()))
        with connection.execute_wrapper(count):
            while time.time() < until:
                try:
                    client.order_get(ORDER)
                    mine["ok"] += 1
                except VtexUnavailable as exc:
                    mine["refused" if exc.code == "rate_limit" else "errors"] += 1
        client.close()
        connections.close_all()
        with lock:
            for name, value in mine.items():
                totals[name] += value

    threads = [threading.Thread(target=hammer) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"store": args.store, "pid": os.getpid(), **totals,
                      "process_cpu_s": usage.ru_utime + usage.ru_stime}))
    return 0


# --- the run --------------------------------------------------------------------------------------------------

def start_workers(args: argparse.Namespace, stores: list[str], start_at: float) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", "--store", stores[n % len(stores)], "--threads", str(args.threads),
             "--seconds", str(args.seconds), "--limit", str(args.limit), "--max-wait", str(args.max_wait),
             "--start-at", str(start_at)],
            cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, text=True)
        for n in range(args.processes)
    ]


def report(args: argparse.Namespace, times: list[float], results: list[dict], start_at: float) -> bool:
    from core.rate_limit import Budget

    budget = Budget(per_minute=args.limit)
    calls = sum(r["ok"] + r["refused"] for r in results)
    inside = [at for at in times if start_at <= at < start_at + args.seconds]
    print(f"setup         {args.processes} processes x {args.threads} threads, {args.stores} store(s) on one "
          f"account, limit {args.limit:g}/min, {args.seconds:g} s, {args.latency_ms:g} ms per VTEX call")
    print(f"achieved      {len(inside)} requests received = {len(inside) / args.seconds * 60:.0f}/min "
          f"({len(inside) / args.seconds:.1f}/s; the limiter refills at {budget.refill_per_second * 60:.0f}/min "
          f"after a {budget.burst:g}-request burst)")
    held = True
    for seconds in WINDOWS:
        if seconds > args.seconds:
            continue
        most, bound = max_in_window(times, seconds), budget.window_bound(seconds)
        held &= most <= bound
        print(f"window {seconds:>3} s  at most {most} requests (bound {bound}"
              + (" = the limit" if seconds == 60 else f", {args.limit * seconds / 60:g} pro rata") + ")"
              + ("" if most <= bound else "  OVER"))
    cpu = sum(r["limiter_cpu_s"] for r in results)
    print(f"limiter cost  {cpu / max(1, calls) * 1e6:.0f} µs CPU and {sum(r['queries'] for r in results) / max(1, calls):.3f}"
          f" SQL queries per call ({calls} calls, {sum(r['queries'] for r in results)} queries)")
    print(f"workers       {sum(r['process_cpu_s'] for r in results):.1f} s CPU in all "
          f"({sum(r['process_cpu_s'] for r in results) / max(1, calls) * 1e3:.2f} ms per call, HTTP and start-up "
          f"included); refused after the {args.max_wait:g} s maximum wait: {sum(r['refused'] for r in results)}; "
          f"other errors: {sum(r['errors'] for r in results)}")
    print("per process   " + ", ".join(f"{r['ok']}" for r in results) + " requests")
    return held


def main(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench import bench_database

    db_url, drop_db = bench_database(suffix="_bench_rate_limit")
    os.environ.update({"DATABASE_URL": db_url, "DJANGO_SETTINGS_MODULE": "integrationhub.settings"})
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only")
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost")
    os.environ.setdefault("HUB_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    os.environ.setdefault("HUB_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    from core.stores import store_connect
    from sandbox.server import Sandbox

    call_command("migrate", verbosity=0)
    sandbox = Sandbox(account=ACCOUNT, app_key=APP_KEY, app_token=APP_TOKEN, latency_ms=args.latency_ms,
                      seed=1).start()
    sandbox.create_order(order_id=ORDER)
    try:
        stores = [f"bench-{n + 1}" for n in range(args.stores)]
        for name in stores:
            store_connect(name=name, account=ACCOUNT, app_key=APP_KEY, app_token=APP_TOKEN, base_url=sandbox.url,
                          erp_url=sandbox.erp_url)
        connections.close_all()
        start_at = time.time() + 5  # time for every worker to start Django
        workers = start_workers(args, stores, start_at)
        results = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in workers]
        times = sorted(r.at for r in sandbox.requests if r.path.startswith("/api/"))
        held = report(args, times, results, start_at)
        return 0 if held else 1
    finally:
        sandbox.stop()
        connections.close_all()
        drop_db()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8, help="per process")
    parser.add_argument("--limit", type=float, default=600, help="HUB_VTEX_REQUESTS_PER_MINUTE")
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--latency-ms", type=float, default=20, help="the sandbox's delay on every VTEX call")
    parser.add_argument("--stores", type=int, default=2, help="stores on the one account, taken in turn by workers")
    parser.add_argument("--max-wait", type=float, default=10, help="HUB_VTEX_RATE_LIMIT_MAX_WAIT_SECONDS")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    sys.exit(worker(arguments) if arguments.worker else main(arguments))
