#!/usr/bin/env python
"""Load benchmark of the order hook endpoint, POST /hooks/vtex/<store>/, served by gunicorn as `make serve` does.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/integrationhub .venv/bin/python scripts/bench_hook.py
    .venv/bin/python scripts/bench_hook.py --rate 200 --seconds 60 --workers 2 --database-url postgres://...

It creates a throwaway PostgreSQL database next to the one named (`<name>_bench_hook`), migrates it, connects a
store with a hook secret (no VTEX behind it: receiving needs none), and starts gunicorn with the command line
of bin/serve (read from that file, so the two cannot drift apart) and DEBUG off. Only gunicorn runs: the job
cluster is not started, so the stored events are not dispatched and nothing competes with the web workers
but the database and this client. Requests carry `X-Forwarded-Proto: https` as the TLS proxy sets it.

The load is open-loop: request i is due at start + i / rate whatever the earlier ones got, and its latency
counts from that due time, so a slow server cannot hide its queue by slowing the client down (no coordinated
omission). Each notification is a distinct (order, state, CurrentChange), VTEX's payload as documented
(ready-for-handling and handling for each order, canceled for one in 20); about 10 % of the requests resend an
earlier notification byte for byte, as VTEX retries: most 0.2-3 s later, some within a few ms (both in flight).
The first --warmup-seconds of traffic are stored and checked but left out of the figures.

Afterwards it reads the database: every notification answered 200 must be stored once as a first sighting
(FeedEvent source=hook, duplicate_of empty) and each further copy as a duplicate pointing at it, nothing else.
Exit status 1 if anything was lost or doubled, a request was not answered 200, or the achieved rate fell below
95 % of the target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.fernet import Fernet

from bench import bench_database, free_port, group_cpu_seconds, machine_cpu_seconds, percentile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STORE = "benchhook"
ACCOUNT = "benchaccount"
APP_KEY = "vtexappkey-benchaccount-HOOK"
VTEX_TIMEOUT = 5.0  # VTEX gives up on a hook call after 5 s (ORDERS-API.md §2)


# --- gunicorn exactly as bin/serve runs it ----------------------------------------------------------------


def serve_gunicorn_command(bind: str, workers: int | None) -> tuple[list[str], int]:
    """bin/serve's gunicorn command line with WEB_BIND and WEB_WORKERS filled in, and its default worker count."""
    text = (ROOT / "bin" / "serve").read_text()
    default = re.search(r'^WEB_WORKERS="\$\{WEB_WORKERS:-(\d+)\}"', text, re.M)
    line = re.search(r"^start \$PY (-m gunicorn (?:.*\\\n)*.*)$", text, re.M)
    if not default or not line:
        raise SystemExit("cannot find the gunicorn command line in bin/serve: update scripts/bench_hook.py to match")
    workers = workers or int(default.group(1))
    args = [{"$WEB_BIND": bind, "$WEB_WORKERS": str(workers)}.get(arg, arg)
            for arg in shlex.split(line.group(1).replace("\\\n", " "))]
    if any("$" in arg for arg in args):
        raise SystemExit(f"bin/serve's gunicorn line uses a variable this script does not know: {args}")
    return [sys.executable, *args], workers


def process_cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process."""
    parts = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / tick, (int(parts[13]) + int(parts[14])) / tick


class PostgresCpu:
    """CPU of the local PostgreSQL server (every database on it): the postmaster, its live children, and the
    children it reaped meanwhile (with CONN_MAX_AGE 0 each request's backend exits after the request)."""

    def __init__(self) -> None:
        procs = self._processes()
        names = {pid: comm for pid, (comm, _) in procs.items()}
        self.postmaster = next((pid for pid, (comm, ppid) in procs.items()
                                if comm == "postgres" and names.get(ppid) != "postgres"), None)
        self.start = self._snapshot()

    @staticmethod
    def _processes() -> dict[int, tuple[str, int]]:
        found = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    head, tail = open(f"/proc/{entry}/stat").read().rsplit(")", 1)
                except OSError:
                    continue
                found[int(entry)] = (head.split("(", 1)[1], int(tail.split()[1]))
        return found

    def _snapshot(self) -> tuple[float, dict[int, float]] | None:
        if self.postmaster is None:
            return None
        try:
            own, reaped = process_cpu(self.postmaster)
        except OSError:
            return None
        children = {}
        for pid, (_, ppid) in self._processes().items():
            if ppid == self.postmaster:
                try:
                    children[pid] = process_cpu(pid)[0]
                except OSError:
                    pass
        return own + reaped, children

    def seconds(self) -> float | None:
        end = self._snapshot()
        if self.start is None or end is None:
            return None
        (total0, kids0), (total1, kids1) = self.start, end
        # A child alive at the start and reaped since is in `reaped` with its whole life: take off what it
        # had used before the start.
        return (total1 - total0 + sum(cpu - kids0.get(pid, 0.0) for pid, cpu in kids1.items())
                - sum(cpu for pid, cpu in kids0.items() if pid not in kids1))


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


# --- the notifications --------------------------------------------------------------------------------------


@dataclass
class Notification:
    order_id: str
    state: str
    current_change: datetime
    body: bytes


def vtex_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"  # VTEX's 7 fractional digits


def build_plan(*, rate: float, seconds: float, warmup: float, duplicates: float, seed: int
               ) -> tuple[list[Notification], list[int]]:
    """The distinct notifications, and for each request slot (1 / rate apart) the one it sends."""
    rng = random.Random(seed)
    warm_slots = round(warmup * rate)
    total = warm_slots + round(seconds * rate)
    base = datetime.now(timezone.utc).replace(microsecond=0)
    tag = secrets.token_hex(3)
    # Each order: ready-for-handling, then handling ~0.5 s later, and for one in 20 canceled ~1 s later.
    lifecycle = [("ready-for-handling", "window-to-cancel", 0), ("handling", "ready-for-handling", 100),
                 ("canceled", "handling", 200)]
    scheduled = []
    for order in range(total):
        for step, (state, last_state, offset) in enumerate(lifecycle):
            if step == 2 and order % 20:
                continue
            scheduled.append((order * 2.05 + offset, order, step, state, last_state))
    scheduled.sort()
    distinct: list[Notification] = []
    slots: list[int] = []
    for slot in range(total):
        resend = slot >= warm_slots + 1 and rng.random() < duplicates
        if resend:
            # Mostly a retry after VTEX saw a failure or its timeout; sometimes while the first is in flight.
            back = rng.randint(1, 5) if rng.random() < 0.25 else rng.randint(max(1, round(0.2 * rate)),
                                                                              max(2, round(3 * rate)))
            slots.append(slots[max(warm_slots, slot - back)])  # warm-up notifications are not resent
            continue
        _, order, step, state, last_state = scheduled[len(distinct)]
        order_id = f"{tag}{order:07d}-01"
        current = base + timedelta(seconds=order * 0.005 + step * 0.5, microseconds=rng.randint(0, 999))
        payload = {
            "Domain": "Fulfillment", "OrderId": order_id, "State": state, "LastState": last_state,
            "LastChange": vtex_time(current - timedelta(seconds=30)), "CurrentChange": vtex_time(current),
            "Origin": {"Account": ACCOUNT, "Key": APP_KEY},
        }
        distinct.append(Notification(order_id, state, current, json.dumps(payload).encode()))
        slots.append(len(distinct) - 1)
    return distinct, slots


# --- the open-loop client -----------------------------------------------------------------------------------


@dataclass
class Result:
    slot: int
    due: float
    lag: float = 0.0  # from due time to the connect starting: the client's own delay
    latency: float = 0.0  # from due time to the whole answer read
    status: str = ""  # "200", "503", ..., or "timeout" / "error: ..."
    outcome: str = ""


@dataclass
class LoadRun:
    results: list[Result] = field(default_factory=list)
    started: float = 0.0
    measured_from: float = 0.0
    finished: float = 0.0


def request_head(port: int, secret: str, length: int) -> bytes:
    return (f"POST /hooks/vtex/{STORE}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nX-Hub-Hook-Token: {secret}\r\nX-Forwarded-Proto: https\r\n"
            "User-Agent: hub-bench-hook\r\nConnection: close\r\n\r\n").encode()


async def post(port: int, head: bytes, body: bytes) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        answer = await reader.read()  # gunicorn's sync workers close the connection after each answer
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return "error: no HTTP answer", ""
    outcome = ""
    try:
        outcome = json.loads(rest.partition(b"\r\n\r\n")[2]).get("outcome", "")
    except (ValueError, AttributeError):
        pass
    return parts[1].decode(), outcome


async def load(*, port: int, secret: str, plan: list[Notification], slots: list[int], rate: float,
               warm_slots: int, timeout: float, connections: int) -> LoadRun:
    loop = asyncio.get_running_loop()
    run = LoadRun()
    gate = asyncio.Semaphore(connections)  # waiting here counts in the latency: the due time does not move
    heads = {}

    async def one(result: Result, body: bytes) -> None:
        # `timeout` counts from the due time, waiting for a free connection included, so that an overloaded
        # server ends the run `timeout` seconds after the last due time rather than after its whole backlog.
        head = heads.get(len(body)) or heads.setdefault(len(body), request_head(port, secret, len(body)))
        try:
            await asyncio.wait_for(gate.acquire(), result.due + timeout - loop.time())
        except asyncio.TimeoutError:
            result.status, result.latency, result.lag = "not sent", timeout, timeout
            return
        try:
            result.lag = loop.time() - result.due
            result.status, result.outcome = await asyncio.wait_for(post(port, head, body),
                                                                   result.due + timeout - loop.time())
        except asyncio.TimeoutError:
            result.status = "timeout"
        except OSError as exc:
            result.status = f"error: {type(exc).__name__}"
        finally:
            gate.release()
        result.latency = loop.time() - result.due

    run.started = loop.time() + 0.2
    run.measured_from = run.started + warm_slots / rate
    tasks = []
    for slot, index in enumerate(slots):
        due = run.started + slot / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        result = Result(slot=slot, due=due)
        run.results.append(result)
        tasks.append(asyncio.create_task(one(result, plan[index].body)))
    await asyncio.gather(*tasks)
    run.finished = loop.time()
    return run


def wait_ready(port: int, secret: str, server: subprocess.Popen, log_path: Path) -> None:
    body = b'{"hookConfig": "ping"}'
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited ({server.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            status, _ = asyncio.run(asyncio.wait_for(post(port, request_head(port, secret, len(body)), body), 5))
            if status == "200":
                return
            raise SystemExit(f"the hook ping answered {status}:\n{log_path.read_text()[-3000:]}")
        except (OSError, asyncio.TimeoutError):
            time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer within 60 s:\n{log_path.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to gunicorn's process group, as bin/serve stops it: workers finish their request (at most 8 s)."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


# --- the database check -------------------------------------------------------------------------------------


def check_stored(store, plan: list[Notification], slots: list[int], results: list[Result]) -> dict[str, int]:
    """Every notification answered 200 stored once as a first sighting, every further copy as its duplicate."""
    from feeds.models import FeedEvent, HookRejection
    from orders.models import OrderSync

    accepted, unanswered = Counter(), Counter()  # per distinct notification
    for result in results:
        index = slots[result.slot]
        if result.status == "200":
            accepted[index] += 1
        elif not result.status.isdigit():
            unanswered[index] += result.status != "not sent"  # no answer: it may or may not have been stored
    key_of = {(n.order_id, n.state, n.current_change): i for i, n in enumerate(plan)}
    rows = list(FeedEvent.objects.filter(store=store).values_list(
        "pk", "source", "order_id", "state", "current_change", "duplicate_of_id", "outcome"))
    originals: dict[int, list[int]] = {}
    copies: dict[int, list[tuple[int, int]]] = {}
    problems = Counter()
    for pk, source, order_id, state, current_change, duplicate_of, outcome in rows:
        index = key_of.get((order_id, state, current_change))
        if index is None or source != FeedEvent.Source.HOOK:
            problems["rows not sent"] += 1
            continue
        if duplicate_of is None:
            originals.setdefault(index, []).append(pk)
            if outcome not in (FeedEvent.Outcome.QUEUED, FeedEvent.Outcome.IGNORED):
                problems[f"first sightings with outcome {outcome}"] += 1
        else:
            copies.setdefault(index, []).append((pk, duplicate_of))
            if outcome != FeedEvent.Outcome.DUPLICATE:
                problems[f"repeats with outcome {outcome}"] += 1
    lost = doubled = extra = misdirected = 0
    for index in set(accepted) | set(unanswered) | set(originals) | set(copies):
        first = originals.get(index, [])
        stored = len(first) + len(copies.get(index, []))
        lost += max(0, accepted[index] - stored)
        extra += max(0, stored - accepted[index] - unanswered[index])
        doubled += len(first) > 1
        if accepted[index] and not first:
            problems["accepted with no first sighting"] += 1
        misdirected += sum(1 for _, points_at in copies.get(index, []) if points_at not in first)
    ready = {plan[i].order_id for i in originals if plan[i].state == "ready-for-handling"}  # answered or not
    synced = set(OrderSync.objects.filter(store=store).values_list("order_id", flat=True))
    return {
        "rows": len(rows), "first sightings": sum(len(v) for v in originals.values()),
        "repeats": sum(len(v) for v in copies.values()), "distinct accepted": len(accepted),
        "accepted requests": sum(accepted.values()), "lost": lost, "doubled": doubled, "extra": extra,
        "misdirected repeats": misdirected, "orders queued": len(synced & ready),
        "orders not queued": len(ready - synced), "orders queued unasked": len(synced - ready),
        "rejections counted": sum(HookRejection.objects.values_list("count", flat=True)), **problems,
    }


# --- main ---------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200, help="requests per second, resends included (200)")
    parser.add_argument("--seconds", type=float, default=60, help="measured duration (60)")
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers (default: bin/serve's)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""),
                        help="a PostgreSQL URL; the bench database is created next to it (default: DATABASE_URL)")
    parser.add_argument("--duplicates", type=float, default=0.10, help="share of requests that resend (0.10)")
    parser.add_argument("--warmup-seconds", type=float, default=2, help="traffic before the measured window (2)")
    parser.add_argument("--timeout", type=float, default=30, help="seconds from a request's due time to its answer before the client gives up (30)")
    parser.add_argument("--connections", type=int, default=1000, help="most connections open at once (1000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("needs PostgreSQL, the production database: --database-url postgres://... or DATABASE_URL")

    db_url, drop_db = bench_database(args.database_url, suffix="_bench_hook")
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "DJANGO_SETTINGS_MODULE": "integrationhub.settings",
        # The throwaway database's secrets need a key, not the one in a developer's .env (the environment wins).
        "HUB_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_DEBUG": "0",  # bin/serve forces it off too
    }
    env.pop("HUB_SANDBOX", None)
    os.environ.update(env)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    from core.models import Store
    from core.stores import store_connect

    logs = Path(tempfile.mkdtemp(prefix="hub-bench-hook-"))
    log_path = logs / "gunicorn.log"
    server = None
    try:
        call_command("migrate", verbosity=0)
        secret = secrets.token_urlsafe(32)
        store_connect(name=STORE, account=ACCOUNT, app_key=APP_KEY, app_token="not-used-by-the-hook",
                      base_url="http://127.0.0.1:9", erp_url="http://127.0.0.1:9/erp/orders", hook_secret=secret)
        store = Store.objects.get(name=STORE)
        connections.close_all()

        port = free_port()
        command, workers = serve_gunicorn_command(f"127.0.0.1:{port}", args.workers)
        with open(log_path, "wb") as log:  # the access log and the hub's INFO lines, as in production
            server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        wait_ready(port, secret, server, log_path)

        plan, slots = build_plan(rate=args.rate, seconds=args.seconds, warmup=args.warmup_seconds,
                                 duplicates=args.duplicates, seed=args.seed)
        warm_slots = round(args.warmup_seconds * args.rate)
        load_before = loadavg()
        postgres = PostgresCpu()
        machine0, server0, client0 = machine_cpu_seconds(), group_cpu_seconds(server.pid), resource.getrusage(
            resource.RUSAGE_SELF)
        wall0 = time.monotonic()
        run = asyncio.run(load(port=port, secret=secret, plan=plan, slots=slots, rate=args.rate,
                               warm_slots=warm_slots, timeout=args.timeout, connections=args.connections))
        wall = time.monotonic() - wall0
        client1 = resource.getrusage(resource.RUSAGE_SELF)
        machine_cpu, server_cpu = machine_cpu_seconds() - machine0, group_cpu_seconds(server.pid) - server0
        client_cpu = client1.ru_utime + client1.ru_stime - client0.ru_utime - client0.ru_stime
        postgres_cpu = postgres.seconds()
        load_after = loadavg()

        measured = [r for r in run.results if r.slot >= warm_slots]
        statuses = Counter(r.status for r in measured)
        outcomes = Counter(r.outcome or "-" for r in measured if r.status == "200")
        latencies = [r.latency * 1000 for r in measured]
        lags = [r.lag * 1000 for r in measured]
        answered = sum(1 for r in measured if r.status.isdigit())
        last_answer = max(r.due + r.latency for r in measured)
        achieved = answered / (last_answer - run.measured_from)
        ok = statuses.get("200", 0)
        late = sum(1 for r in measured if r.latency > VTEX_TIMEOUT)

        stop(server)  # a request the client gave up on may still be in a worker: let it finish before counting
        stored = check_stored(store, plan, slots, run.results)
        failures = [f"{name} {count}" for name, count in stored.items()
                    if count and name not in ("rows", "first sightings", "repeats", "distinct accepted",
                                              "accepted requests", "orders queued")]
        exact = not failures
        if ok != len(measured) or any(r.status != "200" for r in run.results):
            failures.append(f"not answered 200: {sum(1 for r in run.results if r.status != '200')} request(s)")
        if achieved < 0.95 * args.rate:
            failures.append(f"achieved {achieved:.1f}/s < 95% of {args.rate:g}/s")

        cores = os.cpu_count() or 1
        resends = len(measured) - len({slots[r.slot] for r in measured})
        print(f"server        gunicorn, bin/serve's command line: {' '.join(command[1:])}")
        print(f"              {workers} sync worker(s), DEBUG off, PostgreSQL {connections['default'].pg_version // 10000}"
              f", CONN_MAX_AGE {connections['default'].settings_dict['CONN_MAX_AGE']}; job cluster not running")
        print(f"load          {args.rate:g} requests/s for {args.seconds:g} s, open loop, after {args.warmup_seconds:g} s"
              f" of warm-up: {len(measured)} requests, {resends} of them resends ({resends / len(measured):.1%})")
        print(f"achieved      {achieved:.1f} requests/s answered ({achieved / args.rate:.1%} of the target); "
              f"last answer {last_answer - run.measured_from - args.seconds:+.2f} s after the last due time")
        print(f"latency       p50 {statistics.median(latencies):.1f} ms  p95 {percentile(latencies, 95):.1f} ms  "
              f"p99 {percentile(latencies, 99):.1f} ms  max {max(latencies):.1f} ms  (from each request's due "
              f"time, unanswered counted as {args.timeout:g} s; over VTEX's 5 s: {late})")
        print(f"client delay  p99 {percentile(lags, 99):.1f} ms  max {max(lags):.1f} ms from due time to connect")
        print(f"status        {dict(sorted(statuses.items()))}; outcomes of the 200s {dict(sorted(outcomes.items()))}")
        print("stored        " + ", ".join(f"{k} {v}" for k, v in stored.items()))
        pg = "n/a" if postgres_cpu is None else f"{postgres_cpu:.0f} s"
        rest = machine_cpu - server_cpu - client_cpu - (postgres_cpu or 0)
        print(f"CPU           machine {machine_cpu:.0f} s busy of {wall * cores:.0f} s ({cores} cores, "
              f"{machine_cpu / (wall * cores):.0%}): gunicorn {server_cpu:.0f} s "
              f"({server_cpu / max(1, stored['rows'] - warm_slots) * 1000:.1f} ms per notification stored), "
              f"PostgreSQL server (every database on it) {pg}, "
              f"this client {client_cpu:.0f} s, rest (OS, other work on the machine) {rest:.0f} s")
        print(f"machine load  {load_before} before, {load_after} after (1/5/15-minute load averages)")
        print("result        " + ("every notification answered 200 stored exactly once" if exact
                                  else "NOT stored exactly once") + ("; OK" if not failures
                                                                     else "; FAILED: " + "; ".join(failures)))
        return 1 if failures else 0
    finally:
        if server is not None:
            stop(server)
        connections.close_all()
        drop_db()
        if os.environ.get("BENCH_KEEP_LOG"):
            print(f"gunicorn log  {log_path}")
        else:
            log_path.unlink(missing_ok=True)
            logs.rmdir()


if __name__ == "__main__":
    sys.exit(main())
