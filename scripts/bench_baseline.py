"""The benchmark's baseline: a plain sequential consumer of VTEX's Orders Feed v3, written from VTEX's guide
(../shared/vtex/ORDERS-API.md: read the feed with maxlot=10, work each item, commit the lot's handles).

For each `ready-for-handling` item it gets the order, POSTs it to the ERP with the body and Idempotency-Key
the hub's HttpErpConnector sends, and calls start-handling; other items are only committed. One
`requests.Session`, one call at a time, no database: what a first integration usually looks like.
No Django here, so scripts/bench.py can run it without settings.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from dataclasses import dataclass
from urllib.parse import quote

import requests

TIMEOUT_SECONDS = 20.0


@dataclass
class BaselineResult:
    orders: int  # ready-for-handling orders worked
    seconds: float  # from the first read to the first empty read
    cpu_seconds: float  # this process's CPU meanwhile (the consumer is the only thing it runs)
    calls: int


def _idempotency_key(store: str, order_id: str, event: str) -> str:
    # The hub's formula (orders/erp.py idempotency_key), so the ERP sees the same kind of key.
    return hashlib.sha256(f"{store}\n{order_id}\n{event}".encode()).hexdigest()[:40]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def baseline_consume(*, url: str, erp_url: str, app_key: str, app_token: str, store: str = "baseline",
                     timeout: float = 900.0) -> BaselineResult:
    """Work the feed at `url` until a read comes back empty (the sandbox returns every visible item)."""
    session = requests.Session()
    session.trust_env = False  # no proxy lookups per call: the hub's sessions do the same (integrationhub/http.py)
    session.headers.update({"X-VTEX-API-AppKey": app_key, "X-VTEX-API-AppToken": app_token,
                            "Accept": "application/json", "Content-Type": "application/json"})
    worked = calls = 0
    cpu_before, started = _cpu_seconds(), time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            response = session.get(f"{url}/api/orders/feed", params={"maxlot": 10}, timeout=TIMEOUT_SECONDS)
            calls += 1
            response.raise_for_status()
            items = response.json()
            if not items:
                break
            for item in items:
                if item["state"] != "ready-for-handling":
                    continue  # committed below with the rest: VTEX asks to commit every event, even ignored ones
                order_url = f"{url}/api/oms/pvt/orders/{quote(item['orderId'], safe='')}"
                response = session.get(order_url, timeout=TIMEOUT_SECONDS)
                calls += 1
                response.raise_for_status()
                order = response.json()
                if order.get("status") != "ready-for-handling":
                    continue  # moved on since the event: nothing to hand over
                body = {"event": "order.ready", "store": store, "orderId": item["orderId"], "order": order}
                key = _idempotency_key(store, item["orderId"], "order.ready")
                response = session.post(erp_url, data=json.dumps(body), headers={"Idempotency-Key": key},
                                        timeout=TIMEOUT_SECONDS)
                calls += 1
                response.raise_for_status()
                response = session.post(f"{order_url}/start-handling", timeout=TIMEOUT_SECONDS)
                calls += 1
                if response.status_code != 204:
                    raise RuntimeError(f"start-handling {item['orderId']}: HTTP {response.status_code}")
                worked += 1
            handles = [item["handle"] for item in items]
            response = session.post(f"{url}/api/orders/feed", data=json.dumps({"handles": handles}),
                                    timeout=TIMEOUT_SECONDS)
            calls += 1
            response.raise_for_status()
    finally:
        session.close()
    return BaselineResult(orders=worked, seconds=time.monotonic() - started, cpu_seconds=_cpu_seconds() - cpu_before,
                          calls=calls)
