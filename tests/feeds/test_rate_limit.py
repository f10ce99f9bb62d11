"""VTEX's per-account limits: one request budget for all processes, and a 429 pauses the whole account."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from core.models import Store, VtexRateLimit
from core.rate_limit import AccountLimiter, Budget, account_key
from core.stores import store_connect
from core.vtex.client import VtexUnavailable
from core.vtex_account import vtex_client
from feeds.services import feeds_pull
from orders.models import OrderSync
from orders.services.dispatch import orders_due
from orders.services.process import order_process
from tests.conftest import TOKEN
from tests.feeds.test_commands import ROOT, _env

sys.path.insert(0, str(ROOT / "scripts"))
from bench_rate_limit import ORDER as BENCH_ORDER  # noqa: E402 - the script's workers ask for this order
from bench_rate_limit import max_in_window  # noqa: E402 - the same window count as the benchmark

pytestmark = pytest.mark.django_db(transaction=True)
ORDER = BENCH_ORDER  # Get order: a route VTEX documents the 6,000/min limit for (the others are not limited)


@pytest.fixture(autouse=True)
def an_order(sandbox) -> None:
    sandbox.create_order(order_id=ORDER)


def connect(sandbox, name: str, account: str = "sandbox") -> Store:
    return store_connect(name=name, account=account, app_key=sandbox.app_key, app_token=TOKEN, base_url=sandbox.url,
                         erp_url=sandbox.erp_url).store


def api_times(sandbox) -> list[float]:
    return sorted(request.at for request in sandbox.requests if request.path.startswith("/api/"))


def test_a_low_limit_holds_across_three_processes_and_two_stores_of_one_account(sandbox, store):
    """120/min, scaled: the run (12 s of calls, plus the few seconds slots reserved before the end take to come
    due) is shorter than 60 s, so every 5 s window is held to the limiter's bound for 5 s (10 pro rata plus the
    2-request burst: 12), and 60 s to exactly the limit. The three processes take two stores of one account, so
    the budget is shared through the database, not within a process."""
    connect(sandbox, "acme-2")
    budget, seconds = Budget(per_minute=120), 12
    assert budget.window_bound(60) == 120 and budget.window_bound(5) == 12
    start_at = time.time() + 4  # Django's start-up in each process
    workers = [
        subprocess.Popen([sys.executable, "scripts/bench_rate_limit.py", "--worker", "--store", name,
                          "--threads", "3", "--seconds", str(seconds), "--limit", "120", "--max-wait", "10",
                          "--start-at", str(start_at)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
        for name in ("acme", "acme-2", "acme")
    ]
    results = [json.loads(worker.communicate(timeout=60)[0].strip().splitlines()[-1]) for worker in workers]

    times = api_times(sandbox)
    assert all(worker.returncode == 0 for worker in workers)
    assert sum(result["ok"] for result in results) == len(times)
    spread = f"{len(times)} requests, at most {max_in_window(times, 5)} in 5 s, per process {results}"
    assert max_in_window(times, 5) <= budget.window_bound(5), spread
    assert max_in_window(times, 60) <= 120, spread
    # Held, not starved: the three together get close to the refill rate (about 1.96/s).
    assert len(times) >= 0.8 * budget.refill_per_second * seconds, spread
    assert sum(result["errors"] for result in results) == 0


def test_two_stores_of_one_account_share_one_budget_and_another_account_has_its_own(sandbox, store, settings):
    settings.HUB_VTEX_REQUESTS_PER_MINUTE = 60  # a bucket of one request, refilled about once a second
    settings.HUB_VTEX_RATE_LIMIT_MAX_WAIT_SECONDS = 0.3
    same, other = connect(sandbox, "acme-2"), connect(sandbox, "other", account="other")
    assert account_key(same) == account_key(store) != account_key(other)

    vtex_client(store).order_get(ORDER)
    started = time.monotonic()
    with pytest.raises(VtexUnavailable) as refused:
        vtex_client(same).order_get(ORDER)
    vtex_client(other).order_get(ORDER)

    assert time.monotonic() - started < 1.0  # no point waiting past the maximum: it said so at once
    assert refused.value.code == "rate_limit" and refused.value.call is None
    assert "no VTEX request slot for account sandbox@127.0.0.1" in str(refused.value)
    assert len(api_times(sandbox)) == 2  # the refused call never reached VTEX
    assert VtexRateLimit.objects.count() == 2


def test_a_call_waits_for_its_slot_but_never_longer_than_the_maximum(sandbox, store, settings):
    settings.HUB_VTEX_REQUESTS_PER_MINUTE = 60
    settings.HUB_VTEX_RATE_LIMIT_MAX_WAIT_SECONDS = 2.0
    client = vtex_client(store)
    client.order_get(ORDER)

    started = time.monotonic()
    client.order_get(ORDER)  # the bucket is empty: waits for the next token, about a second
    waited = time.monotonic() - started
    settings.HUB_VTEX_RATE_LIMIT_MAX_WAIT_SECONDS = 0.2
    started = time.monotonic()
    with pytest.raises(VtexUnavailable, match="within 0.2s"):
        client.order_get(ORDER)

    assert 0.5 < waited < 2.0
    assert time.monotonic() - started < 0.5
    times = api_times(sandbox)
    assert len(times) == 2 and times[1] - times[0] > 0.5


def terminate_backend(conn) -> None:
    """What a PostgreSQL restart or pg_terminate_backend does to one of our connections."""
    db, pid = conn.settings_dict, conn.connection.info.backend_pid
    with psycopg.connect(host=db["HOST"] or None, port=db["PORT"] or None, user=db["USER"] or None,
                         password=db["PASSWORD"] or None, dbname=db["NAME"], autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_without_its_database_the_limiter_refuses_calls_then_reconnects(sandbox, store, settings):
    if connection.vendor != "postgresql":
        pytest.skip("kills a PostgreSQL connection")
    settings.HUB_VTEX_REQUESTS_PER_MINUTE = 600  # batches of one: each call asks the database
    client = vtex_client(store)
    client.order_get(ORDER)
    terminate_backend(connection)

    with pytest.raises(VtexUnavailable, match="the database that shares it is unavailable"):
        client.order_get(ORDER)  # fails closed: no unlimited calls while the budget cannot be read
    client.order_get(ORDER)  # a new connection

    assert len(api_times(sandbox)) == 2


def test_a_429_on_one_store_pauses_every_store_and_process_of_its_account(sandbox, store):
    same, other = connect(sandbox, "acme-2"), connect(sandbox, "other", account="other")
    now = timezone.now()
    syncs = {s.name: OrderSync.objects.create(store=s, order_id=f"{s.name}-01", next_attempt_at=now)
             for s in (store, same, other)}
    sandbox.fail_next("order_get", 429, headers={"Retry-After": "30"})

    order_process(sync_id=syncs["acme"].pk)  # GET order answers 429: the dispatcher pauses the account

    paused = dict(Store.objects.values_list("name", "vtex_paused_until"))
    assert paused["acme"] == paused["acme-2"] and paused["other"] is None
    assert timedelta(seconds=28) < paused["acme-2"] - now < timedelta(seconds=32)
    assert VtexRateLimit.objects.get(account_key=account_key(same)).paused_until == paused["acme-2"]
    # Dispatch and the feed reader leave the other store of the account alone...
    assert orders_due() == [syncs["other"].pk]
    before = len(sandbox.requests)
    report = feeds_pull(deadline=time.monotonic() + 2, store_ids=[same.pk])
    assert report.read == 0 and len(sandbox.requests) == before
    # ...and so does any other process's limiter: it reads the pause from the shared bucket, without calling VTEX.
    with pytest.raises(VtexUnavailable, match="VTEX answered 429") as refused:
        AccountLimiter(account_key(same))()
    assert 25 < refused.value.retry_after <= 30
    with pytest.raises(VtexUnavailable, match="VTEX answered 429"):
        vtex_client(same).order_get(ORDER)
    assert len(sandbox.requests) == before
    vtex_client(other).order_get(ORDER)  # another account: not paused


def test_only_the_routes_vtex_documents_the_limit_for_are_held_to_it(sandbox, store, settings):
    settings.HUB_VTEX_REQUESTS_PER_MINUTE = 60  # a bucket of one Get order
    settings.HUB_VTEX_RATE_LIMIT_MAX_WAIT_SECONDS = 0.2
    client = vtex_client(store)
    client.order_get(ORDER)
    with pytest.raises(VtexUnavailable, match="no VTEX request slot"):
        client.order_get(ORDER)

    started = time.monotonic()
    for _ in range(5):  # the feed's configuration: no published number, so only a 429 holds it back
        client.feed_config_get()
    assert time.monotonic() - started < 1.0


def test_an_order_refused_a_slot_waits_without_using_up_its_attempts(sandbox, store, settings):
    settings.HUB_VTEX_REQUESTS_PER_MINUTE = 60
    settings.HUB_VTEX_RATE_LIMIT_MAX_WAIT_SECONDS = 0.2
    vtex_client(store).order_get(ORDER)  # the one slot of this second is gone
    sync = OrderSync.objects.create(store=store, order_id=ORDER, next_attempt_at=timezone.now())

    order_process(sync_id=sync.pk)

    sync.refresh_from_db()
    assert (sync.state, sync.attempts, sync.error_kind) == ("new", 0, "vtex_rate_limited")
    assert timezone.now() < sync.next_attempt_at <= timezone.now() + timedelta(seconds=1.5)
    assert "waiting until" in sync.attempts_log.get(outcome="retry").message
