#!/usr/bin/env python
"""How the admin pages hold up with many orders: builds N orders (default 100,000) with timelines in a
throwaway database, then times the order list (plain, filtered, searched), an order's page and the
dashboard through Django's test client, with the number of SQL queries of each.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/integrationhub .venv/bin/python scripts/bench_admin.py

With --events N (e.g. 1000000) it also stores N feed events (PostgreSQL: one INSERT ... SELECT
generate_series), spreads the orders, their timelines and the events over the last --days days (180), and
times the event list, the dispatch query (orders_due), storing a lot of events against them (the dedupe
lookups), and prune runs (HUB_RETENTION_DAYS, 90): the first one, with the backlog, then the next one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=0, help="feed events to store as well (e.g. 1000000)")
    parser.add_argument("--days", type=int, default=180, help="with --events: the history's span, in days")
    args = parser.parse_args()
    if args.events and not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        parser.error("--events needs PostgreSQL (DATABASE_URL=postgres://...)")

    from bench import bench_database

    db_url, drop_db = bench_database()
    os.environ["DATABASE_URL"] = db_url
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only")
    # The throwaway database's tokens need a key, not the one in a developer's .env (the environment wins).
    os.environ.setdefault("HUB_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrationhub.settings")
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"  # Django's test client asks for this host; no server runs
    # Production's hashed static files need collectstatic's manifest: built below, in a throwaway folder.
    os.environ["DJANGO_STATIC_ROOT"] = tempfile.mkdtemp(prefix="hub-bench-static-")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection, connections
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from core.stores import store_connect
    from orders.models import OrderSync, SyncAttempt

    try:
        call_command("migrate", verbosity=0)
        call_command("collectstatic", "--noinput", verbosity=0)
        store = store_connect(name="bench", account="bench", app_key="k", app_token="t",
                              erp_url="http://127.0.0.1:9/erp").store
        now = timezone.now()
        states = ["handling_started"] * 90 + ["needs_attention"] * 4 + ["canceled"] * 4 + ["sent_to_erp"] * 2
        started = time.monotonic()
        for start in range(0, args.orders, 5000):
            rows = [OrderSync(store=store, order_id=f"{1_000_000_000_000 + n}-01", sequence=str(500_000 + n),
                              customer_email=f"customer{n}@example.com", state=states[n % len(states)],
                              vtex_status="handling", attempts=n % 3,
                              last_error="ERP refused the order: HTTP 422" if n % 25 == 0 else "")
                    for n in range(start, min(args.orders, start + 5000))]
            created = OrderSync.objects.bulk_create(rows)
            SyncAttempt.objects.bulk_create([
                SyncAttempt(order=sync, step=step, outcome="ok", http_status=code, duration_ms=20)
                for sync in created for step, code in (("get_order", 200), ("erp_send", 201), ("start_handling", 204))
            ])
        OrderSync.objects.update(created_at=now - timedelta(hours=2))
        print(f"built {args.orders} orders and {3 * args.orders} timeline rows in {time.monotonic() - started:.0f} s")
        if args.events:
            started = time.monotonic()
            history_spread(days=args.days)
            events_build(store_id=store.pk, count=args.events, orders=args.orders, days=args.days)
            print(f"built {args.events} feed events over {args.days} days in {time.monotonic() - started:.0f} s")
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")

        User.objects.create_superuser("bench", "", "pw")
        client = Client()
        client.login(username="bench", password="pw")
        one = OrderSync.objects.order_by("pk")[args.orders // 2]
        middle_page = max(1, min(500, args.orders // 200))  # 500 of 1000 at the default size; exists when small
        pages = {
            "order list": "/admin/orders/ordersync/",
            "list, needs attention": "/admin/orders/ordersync/?state__exact=needs_attention",
            f"list, page {middle_page}": f"/admin/orders/ordersync/?p={middle_page}",
            "search by order id": f"/admin/orders/ordersync/?q={one.order_id}",
            "search by email": f"/admin/orders/ordersync/?q={one.customer_email}",
            "order page": f"/admin/orders/ordersync/{one.pk}/change/",
            "dashboard": "/admin/",
        }
        print(f"{'page':24} {'median ms':>10} {'max ms':>8} {'queries':>8}")
        for name, url in pages.items():
            timings = []
            for _ in range(5):
                with CaptureQueriesContext(connection) as queries:
                    t0 = time.monotonic()
                    response = client.get(url, secure=True)  # as behind the TLS proxy: no https redirect
                    timings.append((time.monotonic() - t0) * 1000)
                assert response.status_code == 200, (url, response.status_code)
            print(f"{name:24} {statistics.median(timings):10.0f} {max(timings):8.0f} {len(queries):8d}")
            if os.environ.get("BENCH_SHOW_SQL"):
                for query in sorted(queries.captured_queries, key=lambda q: -float(q["time"]))[:3]:
                    print(f"    {float(query['time']) * 1000:6.0f} ms  {query['sql'][:150]}")
        if args.events:
            events_bench(client=client, store=store, orders=args.orders)
        return 0
    finally:
        connections.close_all()
        drop_db()
        shutil.rmtree(os.environ["DJANGO_STATIC_ROOT"], ignore_errors=True)


STATES = ["order-created", "payment-pending", "payment-approved", "window-to-cancel", "ready-for-handling",
          "start-handling", "handling", "invoiced", "order-accepted", "approve-payment"]


def history_spread(*, days: int) -> None:
    """Orders (by id) created evenly over the last `days` days, their timelines with them; unfinished ones due."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id), max(id) FROM orders_ordersync")
        low, high = cursor.fetchone()
        span = max(1, high - low)
        cursor.execute(f"""UPDATE orders_ordersync SET created_at = now() - interval '{days} days' * (1 - (id - {low})::float / {span}),
                                  updated_at = now() - interval '{days} days' * (1 - (id - {low})::float / {span})
                                               + interval '10 minutes',
                                  next_attempt_at = CASE WHEN state = 'sent_to_erp' THEN now() END""")
        cursor.execute("""UPDATE orders_syncattempt a SET created_at = o.created_at + interval '1 minute' * (a.id % 7)
                          FROM orders_ordersync o WHERE a.order_id = o.id""")


def events_build(*, store_id: int, count: int, orders: int, days: int) -> None:
    """`count` committed feed events, oldest first, about count/orders per order; 1 in 100 is a repeat of the
    event before it and 1 in 1,000 was never committed (kept whatever its age)."""
    from django.db import connection

    states = "ARRAY[" + ",".join(f"'{state}'" for state in STATES) + "]"
    with connection.cursor() as cursor:
        cursor.execute(f"""
            INSERT INTO feeds_feedevent (store_id, source, event_id, handle, order_id, domain, state, last_state,
                                         last_change, current_change, payload, outcome, error, received_at,
                                         committed_at)
            SELECT {store_id}, 'feed', 'ev-' || g, 'AQEBRx' || md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text),
                   order_id, 'Fulfillment', state, 'order-created', at, at,
                   jsonb_build_object('eventId', 'ev-' || g, 'orderId', order_id, 'domain', 'Fulfillment',
                                      'state', state, 'lastState', 'order-created', 'currentChange', at,
                                      'lastChange', at),
                   CASE WHEN state = 'ready-for-handling' THEN 'queued' ELSE 'ignored' END, '', at,
                   CASE WHEN g % 1000 = 999 THEN NULL ELSE at + interval '1 second' END
            FROM (SELECT g, ({1_000_000_000_000} + g::bigint * {orders} / {count}) || '-01' AS order_id,
                         ({states})[1 + g % {len(STATES)}] AS state,
                         now() - interval '{days} days' * (1 - g::float / {count}) AS at
                  FROM generate_series(0, {count - 1}) AS g) AS s""")
        cursor.execute("""UPDATE feeds_feedevent SET outcome = 'duplicate', duplicate_of_id = id - 1
                          WHERE id % 100 = 0 AND id > (SELECT min(id) FROM feeds_feedevent)""")


def timed(name: str, call, *, runs: int = 5) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    timings = []
    for _ in range(runs):
        with CaptureQueriesContext(connection) as queries:
            t0 = time.monotonic()
            call()
            timings.append((time.monotonic() - t0) * 1000)
    print(f"{name:24} {statistics.median(timings):10.0f} {max(timings):8.0f} {len(queries):8d}")
    if os.environ.get("BENCH_SHOW_SQL"):
        for query in sorted(queries.captured_queries, key=lambda q: -float(q["time"]))[:3]:
            print(f"    {float(query['time']) * 1000:6.0f} ms  {query['sql'][:150]}")


def events_bench(*, client, store, orders: int) -> None:
    """The event list, the dispatch query, a lot stored against a million events, and prune runs."""
    from django.db import connection
    from django.utils import timezone

    from core.vtex.client import FeedItem
    from feeds.models import FeedEvent
    from feeds.services import events_store_batch
    from orders.services.dispatch import orders_due
    from orders.services.prune import history_prune

    count = FeedEvent.objects.count()
    order_id = FeedEvent.objects.order_by("pk").values_list("order_id", flat=True)[count // 2]
    middle_page = max(1, min(500, count // 200))
    pages = {
        "event list": "/admin/feeds/feedevent/",
        "events, queued only": "/admin/feeds/feedevent/?outcome__exact=queued",
        f"events, page {middle_page}": f"/admin/feeds/feedevent/?p={middle_page}",
        "events, queued, 7 days": "/admin/feeds/feedevent/?outcome__exact=queued&received=7d",
        "events, last 24 hours": "/admin/feeds/feedevent/?received=24h",
        "events, one state": "/admin/feeds/feedevent/?state=invoiced",
        "events, search order id": f"/admin/feeds/feedevent/?q={order_id}",
    }
    for name, url in pages.items():
        timed(name, lambda url=url: page_get(client, url))
    timed("dispatch query", lambda: orders_due(limit=48))
    lots = iter(range(10**6))

    def store_lot() -> None:
        n = next(lots)
        items = [FeedItem(raw={}, handle=f"h-{n}-{i}", event_id=f"bench-{n}-{i}", order_id=f"bench-{n}-01",
                          state=state, current_change=timezone.now()) for i, state in enumerate(STATES)]
        events_store_batch(store=store, items=items)

    timed("store a lot of 10", store_lot)
    before = FeedEvent.objects.count()
    for run in ("first", "next"):
        t0 = time.monotonic()
        report = history_prune()
        print(f"prune, {run} run: {time.monotonic() - t0:.1f} s, {report.summary()}")
    print(f"events: {before} before the prune, {FeedEvent.objects.count()} after")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    timed("event list, after", lambda: page_get(client, "/admin/feeds/feedevent/"))
    timed("dispatch query, after", lambda: orders_due(limit=48))


def page_get(client, url: str) -> None:
    response = client.get(url, secure=True)  # as behind the TLS proxy: no https redirect
    assert response.status_code == 200, (url, response.status_code)


if __name__ == "__main__":
    sys.exit(main())
