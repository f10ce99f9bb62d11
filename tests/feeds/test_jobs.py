"""The scheduled jobs: declared idempotently, sharing the sync code, and run for real by `qcluster`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from django.core.management import call_command
from django_q.models import Schedule

from core.leases import store_pull_lease
from core.models import JobLease
from feeds.models import FeedEvent
from feeds.tasks import pull_feeds
from orders.models import OrderSync
from orders.tasks import dispatch_orders
from tests.feeds.test_commands import ROOT, _connect_args, _env, _manage
from tests.helpers import keys_by_order

pytestmark = pytest.mark.django_db(transaction=True)


def test_setup_schedules_twice_changes_nothing(transactional_db, capsys):
    call_command("setup_schedules")
    first = list(Schedule.objects.order_by("name").values_list("name", "func", "minutes", "next_run"))
    call_command("setup_schedules")
    second = list(Schedule.objects.order_by("name").values_list("name", "func", "minutes", "next_run"))
    assert first == second
    assert {"pull_feeds", "dispatch_orders"} <= {name for name, *_ in first}
    assert "0 created" in capsys.readouterr().out.splitlines()[-1]


def test_the_job_functions_do_the_same_work_as_sync(sandbox, store, settings):
    settings.HUB_JOB_BUDGET_SECONDS = 1.5
    order_ids = sandbox.create_orders(4)

    pulled = pull_feeds()
    dispatched = dispatch_orders()

    assert "pulled 4 event(s): 4 queued" in pulled
    assert "4 handling_started" in dispatched
    assert dict(OrderSync.objects.values_list("order_id", "state")) == {o: "handling_started" for o in order_ids}
    store.refresh_from_db()
    assert store.last_pull_at and store.last_dispatch_at
    assert not JobLease.objects.filter(held_until__isnull=False).exists()  # every lease released


def test_the_pull_job_first_commits_the_live_handles_an_earlier_run_left_uncommitted(sandbox, store, settings):
    settings.HUB_JOB_BUDGET_SECONDS = 1.0
    sandbox.create_orders(2)
    sandbox.commit_fault_rate = 1.0
    assert "0 committed" in pull_feeds()  # VTEX refused every commit for the whole run
    stored = set(FeedEvent.objects.values_list("handle", flat=True))
    assert len(stored) == 2 and sandbox.stats()["queue_hidden"] == 2
    sandbox.commit_fault_rate = 0.0

    assert "2 committed" in pull_feeds()

    assert stored <= set(sandbox.committed_handles) and sandbox.queue_size() == 0
    assert not FeedEvent.objects.filter(committed_at__isnull=True).exists()


REDIS_TEST_URL = "redis://127.0.0.1:6379/15"  # a database of its own, emptied before use


def _redis_broker() -> str:
    """HUB_BROKER_URL for the Redis broker, on an emptied database; skips without Redis unless CI requires it."""
    import redis

    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2).flushdb()
    except redis.RedisError as exc:
        if os.environ.get("HUB_REQUIRE_REDIS"):
            raise
        pytest.skip(f"no Redis at {REDIS_TEST_URL}: {exc}")
    return REDIS_TEST_URL


@pytest.mark.parametrize("broker", ["database", "redis"])
def test_qcluster_runs_the_schedules_and_moves_orders(sandbox, transactional_db, broker):
    assert _manage(*_connect_args(sandbox)).returncode == 0
    assert _manage("setup_schedules").returncode == 0
    order_ids = sandbox.create_orders(10)
    env = _env(HUB_JOB_BUDGET_SECONDS="8", HUB_Q_WORKERS="2",
               HUB_BROKER_URL=_redis_broker() if broker == "redis" else "")
    cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if OrderSync.objects.filter(state="handling_started").count() == len(order_ids):
                break
            time.sleep(0.5)
        if broker == "redis":  # the cluster's queue and its statistics live in Redis, none in the database
            import redis
            from django_q.models import OrmQ

            assert redis.Redis.from_url(REDIS_TEST_URL).keys("django_q:integrationhub:*")
            assert not OrmQ.objects.exists()
    finally:
        os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait(timeout=10)
    assert dict(OrderSync.objects.values_list("order_id", "state")) == {o: "handling_started" for o in order_ids}
    assert Counter(o for o, status in sandbox.start_handling_calls if status == 204) == {o: 1 for o in order_ids}


def test_two_sync_processes_at_once_never_work_one_order_twice(sandbox, transactional_db):
    assert _manage(*_connect_args(sandbox)).returncode == 0
    sandbox.latency_ms = 5
    order_ids = sandbox.create_orders(80)
    procs = [subprocess.Popen([sys.executable, "manage.py", "sync", "--until-idle", "--timeout", "120"], cwd=ROOT,
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=150) for proc in procs]

    assert all(proc.returncode == 0 for proc in procs), outputs
    # Each order was finished by exactly one of the two processes.
    finished = [int(m.group(1)) if (m := re.search(r"(\d+) handling_started", out)) else 0 for out, _ in outputs]
    assert sum(finished) == len(order_ids), outputs
    assert dict(OrderSync.objects.values_list("order_id", "state")) == {o: "handling_started" for o in order_ids}
    assert Counter(d.order_id for d in sandbox.erp_deliveries) == {o: 1 for o in order_ids}
    assert all(len(keys) == 1 for keys in keys_by_order(sandbox).values())
    assert Counter(o for o, status in sandbox.start_handling_calls if status == 204) == {o: 1 for o in order_ids}
    assert not JobLease.objects.filter(name__startswith="pull-store:", held_until__isnull=False).exists()


def test_a_run_of_a_continuous_job_stands_aside_while_all_its_slots_are_active(sandbox, store, settings):
    from core.leases import lease_release, lease_take

    settings.HUB_JOB_BUDGET_SECONDS = 0.5
    settings.HUB_PULL_RUNS = 2
    sandbox.create_orders(1)
    assert lease_take(name="pull_feeds:0") and lease_take(name="pull_feeds:1")  # as if two runs were active

    assert pull_feeds() == "all 2 pull runs are active"
    assert "dispatch runs are active" not in dispatch_orders()
    assert not [r for r in sandbox.requests if r.path == "/api/orders/feed"]

    lease_release(names=["pull_feeds:1"])
    assert "pulled 1 event(s)" in pull_feeds()


def test_a_second_pull_run_stands_by_and_takes_the_feed_over_when_its_reader_stops(sandbox, store, settings):
    """Two pull runs at once: one reads the feed; the other, without a feed, takes it when the lease frees."""
    from core.leases import lease_release, lease_take
    from feeds.services import LEASE_LOOK_SECONDS

    settings.HUB_JOB_BUDGET_SECONDS = LEASE_LOOK_SECONDS * 2 + 1
    assert lease_take(name=store_pull_lease(store.pk))  # another run reads this feed
    sandbox.create_orders(2)
    freed = threading.Timer(1.0, lambda: lease_release(names=[store_pull_lease(store.pk)]))
    freed.start()
    try:
        summary = pull_feeds()
    finally:
        freed.cancel()
    assert "pulled 2 event(s)" in summary, summary
