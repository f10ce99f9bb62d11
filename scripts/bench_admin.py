#!/usr/bin/env python
"""How the admin pages hold up with many orders: builds N orders (default 100,000) with timelines in a
throwaway database, then times the order list (plain, filtered, searched), an order's page and the
dashboard through Django's test client, with the number of SQL queries of each.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/integrationhub .venv/bin/python scripts/bench_admin.py
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
    args = parser.parse_args()

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

    from feeds.stores import store_connect
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
        return 0
    finally:
        connections.close_all()
        drop_db()
        shutil.rmtree(os.environ["DJANGO_STATIC_ROOT"], ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
