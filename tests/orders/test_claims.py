"""Order claims of a process that died on this host are freed at once, not after HUB_CLAIM_SECONDS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from core.leases import lease_holder_id
from orders.cycle import SyncResult, sync_until_idle
from orders.models import OrderSync
from orders.services.process import claims_release_dead_local, order_claim
from tests.feeds.test_commands import ROOT, _connect_args, _env, _manage
from tests.helpers import keys_by_order
from tests.processes import dead_pid

pytestmark = pytest.mark.django_db(transaction=True)


def claimed(store, order_id: str, holder: str) -> OrderSync:
    return OrderSync.objects.create(store=store, order_id=order_id, claim_token="t-" + order_id, claimed_by=holder,
                                    claimed_until=timezone.now() + timedelta(seconds=300),
                                    next_attempt_at=timezone.now())


def test_only_claims_of_processes_of_this_host_that_are_gone_are_freed(store):
    host, _, namespace = lease_holder_id().split(":")
    dead = claimed(store, "dead-01", f"{host}:{dead_pid()}:{namespace}")
    live = claimed(store, "live-01", f"{host}:{os.getppid()}:{namespace}")
    elsewhere = claimed(store, "other-01", f"other-host:{dead_pid()}:{namespace}")
    out = StringIO()

    call_command("release_local_holds", stdout=out)

    dead.refresh_from_db(), live.refresh_from_db(), elsewhere.refresh_from_db()
    assert (dead.claim_token, dead.claimed_until, dead.claimed_by) == ("", None, "")
    assert live.claimed_until is not None and elsewhere.claimed_until is not None
    assert "Released 1 order claim(s) of stopped processes" in out.getvalue()
    assert claims_release_dead_local() == 0  # nothing left to free


def test_a_claim_records_its_holder_and_a_release_clears_it(store):
    sync = OrderSync.objects.create(store=store, order_id="v1-01", next_attempt_at=timezone.now())

    assert order_claim(sync_id=sync.pk) is not None
    assert OrderSync.objects.get(pk=sync.pk).claimed_by == lease_holder_id()
    assert claims_release_dead_local() == 0  # our own claim: we are alive


def test_after_a_sigkill_the_next_sync_works_the_dead_process_orders_at_once(sandbox, transactional_db):
    assert _manage(*_connect_args(sandbox)).returncode == 0
    sandbox.latency_ms = 15
    order_ids = sandbox.create_orders(80)
    # A claim time of 300 s: finishing well within it shows nothing waited for an expiry.
    proc = subprocess.Popen([sys.executable, "manage.py", "sync", "--timeout", "120", "--workers", "2"], cwd=ROOT,
                            env=_env(HUB_CLAIM_SECONDS="300"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not OrderSync.objects.exclude(claimed_by="").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # `sync` and its worker process
    proc.wait(timeout=10)
    assert OrderSync.objects.exclude(claimed_by="").exists(), "the kill must land while the sync holds orders"
    sandbox.make_all_visible()  # the feed items it read but did not commit (VTEX's visibility timeout)

    started = time.monotonic()
    result = _manage("sync", "--timeout", "100")

    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 100
    assert dict(OrderSync.objects.values_list("order_id", "state")) == {o: "handling_started" for o in order_ids}
    assert all(len(k) == 1 for k in keys_by_order(sandbox).values())
    assert Counter(o for o, status in sandbox.start_handling_calls if status == 204) == {o: 1 for o in order_ids}


def _children(pid: int) -> list[int]:
    """The children its main thread forked (Linux), lowest pid first. Only that thread: the others come and go."""
    return sorted(int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def test_a_killed_sync_worker_s_orders_are_taken_up_within_a_heartbeat(sandbox, transactional_db):
    """One of `sync`'s worker processes is SIGKILLed mid-run: the others free its claims on their next
    heartbeat (HUB_HEARTBEAT_SECONDS, 1 s here) while HUB_CLAIM_SECONDS is 300 s, and finish its orders.

    Three processes, and the last worker is killed: `sync` must reap it although an earlier one lives (a zombie
    looks alive, so its claims would wait for their expiry)."""
    assert _manage(*_connect_args(sandbox)).returncode == 0
    sandbox.latency_ms = 15
    order_ids = sandbox.create_orders(200)
    proc = subprocess.Popen([sys.executable, "manage.py", "sync", "--timeout", "120", "--workers", "3"], cwd=ROOT,
                            env=_env(HUB_CLAIM_SECONDS="300", HUB_HEARTBEAT_SECONDS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        host, _, namespace = lease_holder_id().split(":")
        deadline, victim = time.monotonic() + 60, None
        while victim is None and time.monotonic() < deadline:
            workers = _children(proc.pid)
            # The later-forked worker (the first one lives on), once it holds orders.
            if len(workers) == 2 and OrderSync.objects.filter(claimed_by=f"{host}:{workers[-1]}:{namespace}").exists():
                victim = workers[-1]
            time.sleep(0.01)
        assert victim is not None, "the last worker process never held an order"
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        held = OrderSync.objects.filter(claimed_by=f"{host}:{victim}:{namespace}")
        while held.exists() and time.monotonic() - killed_at < 30:
            time.sleep(0.05)
        freed_after = time.monotonic() - killed_at
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert freed_after < 5, f"the dead worker's claims were freed after {freed_after:.1f} s"
    # The run itself says a worker died (feed items it read may be hidden), so it is not idle: run it again.
    assert proc.returncode == 1 and "ended without a report" in output, output
    sandbox.make_all_visible()
    assert _manage("sync", "--timeout", "100").returncode == 0
    assert dict(OrderSync.objects.values_list("order_id", "state")) == {o: "handling_started" for o in order_ids}
    assert all(len(k) == 1 for k in keys_by_order(sandbox).values())
    assert Counter(o for o, status in sandbox.start_handling_calls if status == 204) == {o: 1 for o in order_ids}


def test_orders_another_live_process_holds_do_not_keep_sync_from_the_feed(sandbox, store):
    """Orders held by another process that is alive (its claims stand until they lapse) are that process's work:
    `sync` keeps reading the feed meanwhile, so orders that arrive are worked at once, not after those claims."""
    host, _, namespace = lease_holder_id().split(":")
    now = timezone.now()
    OrderSync.objects.create(store=store, order_id="held-elsewhere", next_attempt_at=now, claim_token="t",
                             claimed_until=now + timedelta(seconds=300), claimed_by=f"{host}:{os.getppid()}:{namespace}")
    result: dict[str, SyncResult] = {}
    def run() -> None:
        try:
            result["run"] = sync_until_idle(timeout=20)
        finally:
            connections.close_all()  # this thread's

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(3)  # the first round has read the (empty) feed and is left with the held order only
    arrived = sandbox.create_orders(3)
    created = time.monotonic()
    while time.monotonic() - created < 15 and OrderSync.objects.filter(
            order_id__in=arrived, state=OrderSync.State.HANDLING_STARTED).count() < 3:
        time.sleep(0.1)
    worked_after = time.monotonic() - created
    thread.join()

    assert worked_after < 6, f"the new orders waited {worked_after:.1f} s"
    assert not result["run"].idle  # the held order still has work: not idle, a timeout
    assert OrderSync.objects.get(order_id="held-elsewhere").state == OrderSync.State.NEW
