"""Small helpers the tests share."""

from __future__ import annotations

from collections import Counter, defaultdict

from orders.cycle import SyncResult, sync_until_idle
from orders.models import OrderSync


def run_sync(timeout: float = 60) -> SyncResult:
    result = sync_until_idle(timeout=timeout)
    assert result.idle, result.summary()
    return result


def states() -> dict[str, str]:
    return dict(OrderSync.objects.values_list("order_id", "state"))


def keys_by_order(sandbox, event: str = "order.ready") -> dict[str, set[str]]:
    keys: dict[str, set[str]] = defaultdict(set)
    for delivery in sandbox.erp_deliveries:
        if delivery.event == event:
            keys[delivery.order_id].add(delivery.idempotency_key)
    return keys


def start_handling_204(sandbox) -> Counter:
    return Counter(order_id for order_id, status in sandbox.start_handling_calls if status == 204)
