"""`sync` as a person runs it: mistakes explained within seconds, progress while it works, who holds a feed,
and a Ctrl-C that leaves nothing held. Real `manage.py sync` processes against the real sandbox."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from core.leases import lease_holder_id, lease_take, store_pull_lease
from core.models import JobLease, Store
from core.stores import store_connect
from feeds.models import FeedEvent
from feeds.services import feeds_pull
from orders.cycle import sync_until_idle
from orders.models import OrderSync
from tests.conftest import TOKEN
from tests.feeds.test_commands import ROOT, _env, _manage
from tests.helpers import keys_by_order
from tests.processes import alive, children

pytestmark = pytest.mark.django_db(transaction=True)
# Bounds on error paths, with room for a loaded machine: today's failure took the whole 600 s timeout.
FAIL_WITHIN_SECONDS = 10
PROGRESS = re.compile(r"^\[\d+s\] events: (\d+) read, (\d+) committed; orders: (\d+) handled, (\d+) waiting, "
                      r"(\d+) need attention; (\d+) owed to VTEX$", re.MULTILINE)


def _connect(sandbox, **changes: object) -> Store:
    values = {"name": "acme", "account": "sandbox", "app_key": "vtexappkey-sandbox-HUB", "app_token": TOKEN,
              "base_url": sandbox.url, "erp_url": sandbox.erp_url, "erp_timeout": 1.0, **changes}
    return store_connect(**values).store


def _free_port() -> int:
    """A port nothing listens on: bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed_sync(*args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = _manage("sync", *args, **env)
    return result, time.monotonic() - started


def _dead_pid() -> int:
    """The pid of a real process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def _in(seconds: float) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


def test_a_refused_connection_fails_within_seconds_naming_the_host_and_what_to_check(sandbox, transactional_db):
    port = _free_port()
    _connect(sandbox, base_url=f"http://127.0.0.1:{port}")

    result, took = _timed_sync("--timeout", "600")

    assert result.returncode == 1, result.stdout + result.stderr
    assert took < FAIL_WITHIN_SECONDS, (took, result.stdout, result.stderr)
    assert f"acme: cannot read the feed at 127.0.0.1:{port}: connection refused" in result.stderr
    assert "check --base-url / the account name" in result.stderr
    assert "trying again (1/2)" in result.stdout  # a couple of quick retries first: a blip is not a verdict
    assert TOKEN not in result.stdout + result.stderr
    store = Store.objects.get(name="acme")
    assert store.feed_status == "failing" and "connection refused" in store.feed_error


def test_a_wrong_url_fails_fast_even_with_handles_left_to_commit(sandbox, store):
    # Handles an earlier pull stored but could not commit are retried first, for as long as they live
    # (minutes): with no connection at all, that retry must not hold `sync` past its quick retries.
    sandbox.create_orders(2)
    sandbox.commit_fault_rate = 1.0
    feeds_pull(deadline=time.monotonic() + 1.0, readers=1)
    assert FeedEvent.objects.filter(committed_at__isnull=True).count() == 2
    port = _free_port()
    Store.objects.filter(pk=store.pk).update(base_url=f"http://127.0.0.1:{port}")

    result = sync_until_idle(timeout=600)

    assert result.seconds < FAIL_WITHIN_SECONDS, result.summary()
    assert result.problems == [f"acme: cannot read the feed at 127.0.0.1:{port}: connection refused — "
                               "nothing answers there: check --base-url / the account name"]


def test_wrong_credentials_fail_within_seconds_naming_401_and_what_to_check(sandbox, transactional_db):
    _connect(sandbox, app_token="wrong-token-4411")
    sandbox.create_orders(1)

    result, took = _timed_sync("--until-idle", "--timeout", "600")  # the old flag is still accepted

    assert result.returncode == 1, result.stdout + result.stderr
    assert took < FAIL_WITHIN_SECONDS, (took, result.stdout, result.stderr)
    host = sandbox.url.removeprefix("http://")
    assert f"acme: cannot read the feed at {host}: HTTP 401" in result.stderr
    assert "check the app key and token" in result.stderr and "appKey's role" in result.stderr
    assert "wrong-token-4411" not in result.stdout + result.stderr
    assert Store.objects.get(name="acme").feed_status == "unauthorized"
    assert sandbox.queue_size() == 1  # nothing was read


def test_a_feed_that_answered_once_is_retried_when_it_stops_answering(sandbox, store):
    # Only a store that never answered in this run fails fast: an outage in the middle of a run is retried.
    sandbox.create_orders(2)

    def outage() -> None:
        deadline = time.monotonic() + 30
        while sandbox.stats()["start_handling_204"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        sandbox.stop()  # from now on: connection refused

    threading.Thread(target=outage, daemon=True).start()
    result = sync_until_idle(timeout=6)

    assert not result.idle and not result.problems and not result.blocked, result.summary()
    assert result.seconds >= 5.9  # retried until its timeout
    assert "connection refused" in Store.objects.get(name="acme").feed_error
    assert set(OrderSync.objects.values_list("state", flat=True)) == {"handling_started"}


def test_it_prints_progress_while_it_works_and_a_summary_at_the_end(sandbox, store):
    sandbox.latency_ms = 100  # slow enough for several progress lines
    order_ids = sandbox.create_orders(40)

    result = _manage("sync", "--timeout", "120", "--progress", "0.5")

    assert result.returncode == 0, result.stdout + result.stderr
    lines = [tuple(int(n) for n in match) for match in PROGRESS.findall(result.stdout)]
    assert len(lines) >= 2, result.stdout
    handled = [line[2] for line in lines]
    assert handled == sorted(handled) and handled[-1] > 0  # counts grow as the orders move
    assert f"{len(order_ids)} handling_started" in result.stdout
    assert re.search(r"^idle after \d+\.\ds$", result.stdout, re.MULTILINE)


def test_it_says_which_live_process_reads_the_feed(sandbox, store):
    sandbox.create_orders(1)
    assert lease_take(name=store_pull_lease(store.pk))  # this test process: alive

    result = _manage("sync", "--timeout", "3")

    assert result.returncode == 1
    expected = f"feed of acme is being read by host {socket.gethostname()} pid {os.getpid()} (lease until "
    assert expected in result.stdout, result.stdout
    assert result.stdout.count(expected) == 1  # said once, not every round
    assert JobLease.objects.get(name=store_pull_lease(store.pk)).holder == lease_holder_id()  # still ours
    assert not [r for r in sandbox.requests if r.path == "/api/orders/feed"]


def test_the_feed_lease_of_a_killed_process_on_this_host_is_taken_over_at_once(sandbox, store):
    order_ids = sandbox.create_orders(3)
    holder = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c",
         "from core.leases import lease_take; import time; "
         f"print(lease_take(name='pull-store:{store.pk}'), flush=True); time.sleep(120)"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        took_it = next((line.strip() for line in holder.stdout if line.strip() in ("True", "False")), "no answer")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)  # reaped: its pid no longer exists
        holder.stdout.close()
    assert took_it == "True"
    lease = JobLease.objects.get(name=store_pull_lease(store.pk))
    assert f":{holder.pid}:" in lease.holder and lease.held_until is not None  # held for 10 more minutes

    result, took = _timed_sync("--timeout", "120")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"took over the feed of acme from host {socket.gethostname()} pid {holder.pid}" in result.stdout
    assert took < 60
    assert dict(OrderSync.objects.values_list("order_id", "state")) == {o: "handling_started" for o in order_ids}
    assert not JobLease.objects.filter(held_until__isnull=False).exists()


def test_only_a_holder_certainly_gone_is_taken_over(transactional_db):
    name = "pull-store:999"
    host, _, namespace = lease_holder_id().split(":")
    dead = _dead_pid()
    # Another host, another PID namespace, a live pid, a holder written before pids were recorded: all wait.
    for holder in (f"elsewhere:{dead}:{namespace}", f"{host}:{dead}:1", f"{host}:{os.getppid()}:{namespace}",
                   f"{host}:{dead}"):
        JobLease.objects.update_or_create(name=name, defaults={"holder": holder, "held_until": _in(600)})
        assert not lease_take(name=name), holder
        assert JobLease.objects.get(name=name).holder == holder

    JobLease.objects.filter(name=name).update(holder=f"{host}:{dead}:{namespace}")
    assert lease_take(name=name)
    assert JobLease.objects.get(name=name).holder == lease_holder_id()


def test_ctrl_c_finishes_the_orders_in_hand_releases_everything_and_a_new_sync_finishes_at_once(
        sandbox, store, tmp_path):
    sandbox.latency_ms = 60  # every call is slow: the signal lands with orders and feed lots in hand
    order_ids = sandbox.create_orders(80)
    out = tmp_path / "sync.out"
    with out.open("w") as stdout:  # a file, not a pipe nobody reads
        proc = subprocess.Popen([sys.executable, "manage.py", "sync", "--timeout", "120"], cwd=ROOT,
                                env=_env(HUB_HTTP_TIMEOUT_SECONDS="5"), stdout=stdout, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while len(sandbox.erp_deliveries) < 15 and time.monotonic() < deadline:
            time.sleep(0.02)
        readers = children(proc.pid)
        proc.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        proc.wait(timeout=60)
        stopped_in = time.monotonic() - signalled
    output = out.read_text()

    assert stopped_in < 15, output
    assert proc.returncode == 1, output
    assert re.search(r"stopping: finishing the orders in hand \(up to \d+ s\)…", output), output
    assert "stopped before idle" in output
    assert readers and not [pid for pid in readers if alive(pid)], "the feed reader outlived sync"
    assert not JobLease.objects.filter(held_until__isnull=False).exists(), "a feed lease is still held"
    assert not OrderSync.objects.exclude(claim_token="").exists(), "an order is still claimed"
    assert not OrderSync.objects.filter(claimed_until__isnull=False).exists()
    assert sandbox.stats()["queue_hidden"] == 0, "a feed lot was read and left uncommitted"
    assert 15 <= len(sandbox.erp_deliveries) < len(order_ids), "the stop must land in the middle of the run"

    # Claims last HUB_CLAIM_SECONDS (300) and feed items hide for 250 s: finishing in time means nothing was held.
    result, took = _timed_sync("--timeout", "60")

    assert result.returncode == 0, result.stdout + result.stderr
    assert dict(OrderSync.objects.values_list("order_id", "state")) == {o: "handling_started" for o in order_ids}
    assert Counter(d.order_id for d in sandbox.erp_deliveries if not d.replay) == {o: 1 for o in order_ids}
    assert all(len(keys) == 1 for keys in keys_by_order(sandbox).values())
    assert Counter(o for o, status in sandbox.start_handling_calls if status == 204) == {o: 1 for o in order_ids}
    assert sandbox.queue_size() == 0
