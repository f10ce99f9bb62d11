"""Hook first, feed as backup: with VTEX (the sandbox) dropping notifications, every order is still handled once."""

from __future__ import annotations

from collections import Counter

import pytest

from core.stores import store_connect
from feeds.hook_config import hook_config_push
from feeds.models import FeedEvent
from tests.helpers import keys_by_order, run_sync, start_handling_204, states

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "hook-secret-Ka93-never-shown-0042"
ORDERS = 40


def _sandbox_sends_notifications(sandbox) -> None:
    missing = [name for name in ("hook_drop_rate", "wait_for_hooks", "hook_deliveries") if not hasattr(sandbox, name)]
    if missing:
        pytest.skip(f"the sandbox does not send hook notifications yet (no {', '.join(missing)})")


def test_with_30_percent_of_notifications_dropped_and_the_feed_on_every_order_is_handled_once(
        sandbox, store, live_server, settings):
    _sandbox_sends_notifications(sandbox)
    settings.HUB_PUBLIC_URL = live_server.url
    store = store_connect(name=store.name, hook_secret=SECRET).store
    pushed = hook_config_push(store=store, by="test")
    assert pushed.ok, pushed.message
    sandbox.hook_drop_rate = 0.3

    order_ids = sandbox.create_orders(ORDERS)
    assert sandbox.wait_for_hooks(30), "the sandbox still had notifications to send"
    hooked = set(FeedEvent.objects.filter(source="hook", state="ready-for-handling").values_list("order_id", flat=True))
    dropped = {delivery.order_id for delivery in sandbox.hook_deliveries
               if delivery.outcome == "dropped" and delivery.state == "ready-for-handling"}
    run_sync()

    # The hook brought some orders, and the drop knob really dropped some: the feed must have caught those.
    assert hooked and dropped and dropped.isdisjoint(hooked), (len(hooked), len(dropped))
    assert states() == {order_id: "handling_started" for order_id in order_ids}
    assert start_handling_204(sandbox) == {order_id: 1 for order_id in order_ids}
    assert {order_id: len(keys) for order_id, keys in keys_by_order(sandbox).items()} == {o: 1 for o in order_ids}
    # One first sighting per order's ready-for-handling change; the other source's copy is a duplicate of it.
    firsts = Counter(FeedEvent.objects.filter(state="ready-for-handling", duplicate_of__isnull=True)
                     .values_list("order_id", flat=True))
    assert firsts == Counter({order_id: 1 for order_id in order_ids})
    by_feed_only = set(FeedEvent.objects.filter(state="ready-for-handling", source="feed", duplicate_of__isnull=True)
                       .values_list("order_id", flat=True))
    assert dropped <= by_feed_only
