"""Transient failures are retried with backoff; permanent ones park the order with the reason."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import Store
from feeds.models import FeedEvent
from feeds.services import feeds_pull
from orders.models import OrderSync, SyncAttempt
from orders.services.process import order_process
from tests.helpers import keys_by_order, run_sync, start_handling_204, states

pytestmark = pytest.mark.django_db(transaction=True)


def _requests_to(sandbox, suffix: str, method: str = "GET"):
    return [r for r in sandbox.requests if r.method == method and r.path.endswith(suffix)]


def test_a_429_on_get_order_waits_at_least_retry_after(sandbox, store):
    [order_id] = sandbox.create_orders(1)
    sandbox.fail_next("order_get", 429, headers={"Retry-After": "2"})

    run_sync()

    gets = _requests_to(sandbox, f"/api/oms/pvt/orders/{order_id}")
    assert [r.status for r in gets] == [429, 200]
    assert gets[1].at - gets[0].at >= 2.0
    sync = OrderSync.objects.get(order_id=order_id)
    assert sync.state == "handling_started"
    retry = SyncAttempt.objects.get(order=sync, outcome="retry")
    assert retry.http_status == 429 and "429" in retry.message


def test_a_429_without_retry_after_pauses_the_store_for_a_minute(sandbox, store):
    sandbox.create_orders(1)
    sandbox.fail_next("feed_read", 429, headers={})  # explicit: no Retry-After header

    before = timezone.now()
    report = feeds_pull(deadline=__import__("time").monotonic() + 5, until_empty=True, readers=1)

    store.refresh_from_db()
    assert report.errors and "429" in report.errors[0]
    assert store.vtex_paused_until >= before + timedelta(seconds=59)
    reads = _requests_to(sandbox, "/api/orders/feed")
    assert [r.status for r in reads] == [429]  # nothing more was sent while paused


def test_5xx_and_broken_json_are_retried(sandbox, store):
    [order_id] = sandbox.create_orders(1)
    sandbox.fail_next("feed_read", "broken_json")
    sandbox.fail_next("order_get", 500)
    sandbox.fail_next("order_get", "broken_json")
    sandbox.fail_next("erp", 503)
    sandbox.fail_next("start_handling", 502)

    run_sync()

    sync = OrderSync.objects.get(order_id=order_id)
    assert sync.state == "handling_started"
    retries = list(SyncAttempt.objects.filter(order=sync, outcome="retry").values_list("step", "http_status"))
    assert retries == [("get_order", 500), ("get_order", 200), ("erp_send", 503), ("start_handling", 502)]
    assert start_handling_204(sandbox) == {order_id: 1}


def test_erp_timeout_is_retried_with_the_same_idempotency_key(sandbox, store):
    [order_id] = sandbox.create_orders(1)
    sandbox.fail_next("erp", "timeout", delay_seconds=2.5)  # the ERP stores it, but answers too late

    run_sync()

    deliveries = [d for d in sandbox.erp_deliveries if d.order_id == order_id]
    assert len(deliveries) == 2
    assert deliveries[0].idempotency_key == deliveries[1].idempotency_key
    assert deliveries[1].replay is True
    sync = OrderSync.objects.get(order_id=order_id)
    assert sync.state == "handling_started" and sync.erp_reference == deliveries[0].erp_id
    assert start_handling_204(sandbox) == {order_id: 1}


def test_erp_4xx_parks_the_order_with_the_erp_answer(sandbox, store):
    [order_id] = sandbox.create_orders(1)
    sandbox.fail_next("erp", 422, body='{"error": "unknown SKU 123"}')

    run_sync()

    sync = OrderSync.objects.get(order_id=order_id)
    assert sync.state == "needs_attention" and sync.error_kind == "erp_refused"
    assert "422" in sync.last_error and "unknown SKU 123" in sync.last_error
    assert sync.next_attempt_at is None
    assert sandbox.start_handling_calls == []
    assert sandbox.order(order_id)["status"] == "ready-for-handling"


def test_an_order_gives_up_after_max_attempts(sandbox, store, settings):
    settings.HUB_MAX_ATTEMPTS = 3
    [order_id] = sandbox.create_orders(1)
    sandbox.fail_next("erp", 500, times=5)

    run_sync()

    sync = OrderSync.objects.get(order_id=order_id)
    assert sync.state == "needs_attention" and sync.attempts == 3
    assert sync.last_error.startswith("gave up after 3 attempts")
    assert len([r for r in sandbox.requests if r.path == "/erp/orders"]) == 3


def test_start_handling_answered_409_after_a_lost_204_counts_as_done(sandbox, store):
    [order_id] = sandbox.create_orders(1)
    # VTEX starts handling but the answer is lost (a crash after the call looks the same to us).
    sandbox.fail_next("start_handling", "timeout", delay_seconds=2.5)

    run_sync()

    sync = OrderSync.objects.get(order_id=order_id)
    assert sync.state == "handling_started"
    assert [status for oid, status in sandbox.start_handling_calls if oid == order_id] == [204, 409]
    notes = list(SyncAttempt.objects.filter(order=sync, step="start_handling").values_list("outcome", "http_status"))
    assert notes == [("retry", None), ("info", 409), ("ok", None)]


def test_start_handling_409_on_a_canceled_order_sends_the_erp_a_cancel_notice(sandbox, store):
    [order_id] = sandbox.create_orders(1)
    sandbox.fail_next("start_handling", 503)
    feeds_pull(deadline=__import__("time").monotonic() + 10, until_empty=True)
    sync = OrderSync.objects.get(order_id=order_id)
    order_process(sync_id=sync.pk)  # ERP accepts; start-handling gets the 503
    sync.refresh_from_db()
    assert sync.state == "sent_to_erp" and sync.next_attempt_at
    sandbox.set_status(order_id, "canceled")  # the customer cancels in between
    OrderSync.objects.filter(pk=sync.pk).update(next_attempt_at=timezone.now())

    order_process(sync_id=sync.pk)

    sync.refresh_from_db()
    assert sync.state == "canceled" and sync.erp_cancel_sent_at
    assert [s for oid, s in sandbox.start_handling_calls if oid == order_id] == [503, 409]
    assert [d.event for d in sandbox.erp_deliveries if d.order_id == order_id] == ["order.ready", "order.canceled"]
    assert keys_by_order(sandbox, "order.canceled")[order_id] != keys_by_order(sandbox)[order_id]


def test_an_order_already_handled_elsewhere_needs_attention(sandbox, store):
    [order_id] = sandbox.create_orders(1)
    feeds_pull(deadline=__import__("time").monotonic() + 10, until_empty=True)
    sandbox.set_status(order_id, "handling")  # someone started handling it outside the hub

    run_sync()

    assert states()[order_id] == "needs_attention"
    assert "never sent this order to the ERP" in OrderSync.objects.get(order_id=order_id).last_error
    assert sandbox.erp_deliveries == []


def test_a_stored_but_uncommitted_batch_is_not_lost_nor_doubled(sandbox, store):
    order_ids = sandbox.create_orders(3)
    sandbox.commit_fault_rate = 1.0  # as if the process died between storing and committing
    feeds_pull(deadline=__import__("time").monotonic() + 1, until_empty=True)
    assert sandbox.queue_size() == 3
    sandbox.commit_fault_rate = 0.0
    # The visibility timeout passes: the hub's handles are dead, and VTEX shows the items again.
    FeedEvent.objects.update(received_at=timezone.now() - timedelta(seconds=300))
    sandbox.make_all_visible()

    run_sync()

    assert sandbox.queue_size() == 0
    assert states() == {order_id: "handling_started" for order_id in order_ids}
    assert {k: len(v) for k, v in keys_by_order(sandbox).items()} == {order_id: 1 for order_id in order_ids}
    assert len(sandbox.erp_deliveries) == 3
    assert FeedEvent.objects.filter(state="ready-for-handling", outcome="duplicate").count() == 3
    Store.objects.get(pk=store.pk)
