"""The whole flow against the sandbox over real HTTP: feed -> store -> commit -> ERP -> start-handling."""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

import pytest

from core.models import ErpConnection, Store
from feeds.models import FeedEvent
from feeds.services import feeds_pull
from orders.cycle import sync_until_idle
from orders.models import OrderSync, SyncAttempt
from orders.services.process import order_process
from tests.conftest import TOKEN
from tests.helpers import keys_by_order, run_sync, start_handling_204, states

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_sends_ready_orders_to_the_erp_then_starts_handling(sandbox, store):
    order_ids = sandbox.create_orders(5)

    run_sync()

    assert states() == {order_id: "handling_started" for order_id in order_ids}
    assert all(sandbox.order(order_id)["status"] == "handling" for order_id in order_ids)
    assert start_handling_204(sandbox) == {order_id: 1 for order_id in order_ids}
    keys = keys_by_order(sandbox)
    assert set(keys) == set(order_ids) and all(len(k) == 1 for k in keys.values())
    first = sandbox.erp_deliveries[0]
    assert first.body["event"] == "order.ready" and first.body["store"] == "acme"
    assert first.body["order"]["orderId"] == first.order_id
    assert first.headers["authorization"] == "Bearer erp-secret-9931"
    assert first.headers["content-type"] == "application/json"
    sync = OrderSync.objects.get(order_id=first.order_id)
    assert sync.erp_reference == first.erp_id and sync.order_snapshot["orderId"] == first.order_id
    # The ERP got the order before VTEX was asked to start handling it.
    for order_id in order_ids:
        erp_at = min(d.at for d in sandbox.erp_deliveries if d.order_id == order_id)
        sh_at = [r.at for r in sandbox.requests if r.path.endswith(f"/{order_id}/start-handling")]
        assert sh_at and erp_at < min(sh_at)
    steps = list(SyncAttempt.objects.filter(order=sync).values_list("step", "outcome", "http_status"))
    assert steps == [("get_order", "ok", 200), ("erp_send", "ok", 201), ("start_handling", "ok", 204)]


def test_every_handle_is_committed_including_ignored_states(sandbox, store):
    [order_id] = sandbox.create_orders(1)
    sandbox.enqueue_event(order_id=order_id, state="payment-approved", last_state="payment-pending")
    sandbox.enqueue_event(order_id=order_id, state="invoiced", last_state="invoice")

    run_sync()

    assert sandbox.queue_size() == 0
    events = FeedEvent.objects.all()
    # ready-for-handling, payment-approved, invoiced, and the `handling` event our start-handling caused.
    assert sorted(events.values_list("state", flat=True)) == ["handling", "invoiced", "payment-approved",
                                                              "ready-for-handling"]
    assert all(event.committed_at for event in events)
    assert set(sandbox.committed_handles) >= {event.handle for event in events}
    assert events.get(state="payment-approved").outcome == "ignored"
    commits = [r for r in sandbox.requests if r.method == "POST" and r.path == "/api/orders/feed"]
    assert commits and all(r.headers["content-type"] == "application/json" for r in commits)


def test_duplicate_events_are_recorded_but_processed_once(sandbox, store):
    [order_id] = sandbox.create_orders(1)
    original = sandbox.enqueue_event(order_id=order_id, state="ready-for-handling")  # a second, distinct event
    sandbox.enqueue_event(order_id=order_id, state="ready-for-handling", event_id=original["eventId"],
                          current_change=original["currentChange"])  # SQS redelivery: same eventId
    sandbox.enqueue_event(order_id=order_id, state="ready-for-handling",
                          current_change=original["currentChange"])  # same change, new eventId

    run_sync()

    ready = FeedEvent.objects.filter(state="ready-for-handling")
    assert ready.count() == 4
    assert ready.filter(outcome="duplicate").count() == 2
    assert all(e.duplicate_of_id for e in ready.filter(outcome="duplicate"))
    assert len([d for d in sandbox.erp_deliveries if d.order_id == order_id]) == 1
    assert start_handling_204(sandbox) == {order_id: 1}
    assert sandbox.queue_size() == 0


def test_malformed_items_are_recorded_and_committed_without_stopping_the_cycle(sandbox, store):
    sandbox.enqueue_raw({"eventId": "BROKEN1", "state": "ready-for-handling"})  # no orderId
    sandbox.enqueue_raw({"eventId": "BROKEN2", "orderId": 12345, "state": None})
    order_ids = sandbox.create_orders(2)

    run_sync()

    malformed = FeedEvent.objects.filter(outcome="malformed")
    assert malformed.count() == 2
    assert {e.error for e in malformed} == {"missing or empty: orderId", "missing or empty: orderId, state"}
    assert all(e.committed_at for e in malformed)
    assert sandbox.queue_size() == 0
    assert states() == {order_id: "handling_started" for order_id in order_ids}


def test_a_canceled_order_is_never_sent_nor_start_handled(sandbox, store):
    [order_id] = sandbox.create_orders(1)
    sandbox.set_status(order_id, "canceled")  # canceled before the hub got to it

    run_sync()

    assert states() == {order_id: "canceled"}
    assert sandbox.erp_deliveries == []
    assert sandbox.start_handling_calls == []


def test_a_cancel_after_the_erp_has_the_order_sends_a_cancel_notice(sandbox, store):
    [order_id] = sandbox.create_orders(1)
    run_sync()
    sandbox.set_status(order_id, "canceled")

    run_sync()

    sync = OrderSync.objects.get(order_id=order_id)
    assert sync.state == "canceled" and sync.erp_cancel_sent_at
    events = [d.event for d in sandbox.erp_deliveries if d.order_id == order_id]
    assert events == ["order.ready", "order.canceled"]


def test_feed_not_configured_is_recorded_for_staff_and_stops_sync_at_once(sandbox, store):
    sandbox.feed_config = None

    started = time.monotonic()
    result = sync_until_idle(timeout=30)

    assert time.monotonic() - started < 5
    assert not result.idle and result.blocked == ["acme: the feed is not configured on VTEX for this appKey"]
    store.refresh_from_db()
    assert store.feed_status == "not_configured"
    assert "not configured" in store.feed_error


def test_wrong_credentials_are_reported_and_change_nothing(sandbox, store):
    store.app_token = "wrong-token-value"
    store.save()
    sandbox.create_orders(1)

    result = sync_until_idle(timeout=30)

    store.refresh_from_db()
    assert store.feed_status == "unauthorized" and "401" in store.feed_error
    assert result.blocked and "401" in result.blocked[0]
    assert FeedEvent.objects.count() == 0 and OrderSync.objects.count() == 0
    assert "wrong-token-value" not in result.summary() + store.feed_error
    assert sandbox.queue_size() == 1


def test_the_token_never_reaches_logs(sandbox, store, caplog):
    caplog.set_level(logging.DEBUG)
    sandbox.create_orders(2)
    sandbox.fail_next("order_get", 500)
    sandbox.fail_next("erp", 400, body='{"error": "bad order"}')

    run_sync()

    assert TOKEN not in caplog.text
    assert "erp-secret-9931" not in caplog.text
    assert OrderSync.objects.filter(state="needs_attention").count() == 1


def test_an_erp_connector_plugs_in_by_dotted_path(sandbox, store):
    from core.stores import store_connect

    store_connect(name="acme", account="sandbox", app_key="vtexappkey-sandbox-HUB", app_token=TOKEN,
                  base_url=sandbox.url, erp_url=sandbox.erp_url, erp_timeout=1.0,
                  erp_connector="tests.orders.connectors.TaggingConnector")
    [order_id] = sandbox.create_orders(1)

    run_sync()

    [delivery] = sandbox.erp_deliveries
    assert delivery.order_id == order_id and delivery.headers["x-connector"] == "tagging"


def test_an_unknown_erp_connector_is_refused_when_connecting(sandbox, store):
    from django.core.exceptions import ValidationError

    from core.stores import store_connect

    for path in ("erp.Nope", "builtins.input"):
        with pytest.raises(ValidationError, match=f"no ERP connector at '{path}': choose one of"):
            store_connect(name="acme", account="sandbox", app_key="k", app_token=TOKEN, base_url=sandbox.url,
                          erp_url=sandbox.erp_url, erp_connector=path)
    store.erp.refresh_from_db()
    assert store.erp.connector == "orders.erp.HttpErpConnector"
    assert Store.objects.get(pk=store.pk).app_key == "vtexappkey-sandbox-HUB"  # nothing of the call was written


def _pulled_order(sandbox) -> OrderSync:
    [order_id] = sandbox.create_orders(1)
    feeds_pull(deadline=time.monotonic() + 10, until_empty=True, readers=1)
    return OrderSync.objects.get(order_id=order_id)


def _assert_released_with_a_retry(sync: OrderSync, step: str, *texts: str) -> SyncAttempt:
    sync.refresh_from_db()
    assert sync.claim_token == "" and sync.claimed_until is None, "the order is still claimed"
    assert sync.state == "new" and sync.attempts == 1 and sync.next_attempt_at is not None
    attempt = sync.attempts_log.get(outcome="retry")
    assert attempt.step == step
    for text in texts:
        assert text in attempt.message and text in sync.last_error
    return attempt


@pytest.mark.parametrize("connector, error", [
    ("tests.orders.connectors.RaisesInInit", "RuntimeError: connector could not start"),
    ("tests.orders.connectors.RaisesInSend", "KeyError: 'customerRef'"),
])
def test_a_connector_that_raises_lands_on_the_timeline_and_frees_the_order(sandbox, store, settings, connector, error):
    from core.stores import store_connect

    settings.HUB_ERP_CONNECTORS = [*settings.HUB_ERP_CONNECTORS, connector]
    store_connect(name="acme", erp_connector=connector)
    sync = _pulled_order(sandbox)

    order_process(sync_id=sync.pk)

    _assert_released_with_a_retry(sync, "erp_send", f"ERP connector {connector} failed", error)
    assert sandbox.erp_deliveries == [] and sandbox.start_handling_calls == []
    # Once the connector is fixed, the retry delivers the order.
    store_connect(name="acme", erp_connector="orders.erp.HttpErpConnector")
    run_sync()
    assert states() == {sync.order_id: "handling_started"}


def test_a_connector_path_no_longer_allowed_is_refused_at_dispatch_too(sandbox, store):
    ErpConnection.objects.filter(store=store).update(connector="builtins.input")  # a row from before the allowlist
    sync = _pulled_order(sandbox)

    order_process(sync_id=sync.pk)

    _assert_released_with_a_retry(sync, "erp_send", "'builtins.input' is not listed in HUB_ERP_CONNECTORS")
    assert sandbox.erp_deliveries == []


def test_a_store_whose_secrets_cannot_be_read_lands_on_the_timeline_and_frees_the_order(sandbox, store, settings):
    from cryptography.fernet import Fernet

    from orders.services import process

    sync = _pulled_order(sandbox)
    settings.HUB_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the key the token was stored with is gone
    process._local.__dict__.clear()  # this thread's store cache

    order_process(sync_id=sync.pk)

    _assert_released_with_a_retry(sync, "get_order", "internal error: SecretUnreadable", "core.Store.app_token")
    assert not [r for r in sandbox.requests if r.path.startswith("/api/oms/")]


@pytest.mark.parametrize("order_id", ["../../../orders/feed", "../../orders/feed/config", "x/../../../orders/feed",
                                      "a?maxlot=10", "a#b"])
def test_order_ids_are_one_path_segment_and_reach_no_other_endpoint(sandbox, order_id):
    from core.vtex.client import VtexClient, VtexError

    sandbox.create_orders(2)
    queued = sandbox.queue_size()
    client = VtexClient(base_url=sandbox.url, app_key=sandbox.app_key, app_token=TOKEN, timeout=5)

    with pytest.raises(VtexError) as got:
        client.order_get(order_id)
    assert got.value.status == 404
    with pytest.raises(VtexError) as handled:
        client.order_start_handling(order_id)
    assert handled.value.status == 404

    encoded = "/api/oms/pvt/orders/" + quote(order_id, safe="")
    assert [(r.method, r.path, r.status) for r in sandbox.requests] == [
        ("GET", encoded, 404), ("POST", encoded + "/start-handling", 404)]
    assert all(not r.query for r in sandbox.requests)
    assert sandbox.queue_size() == queued  # the feed was not read (a read would hide the items)


@pytest.mark.parametrize("order_id", ["", ".", ".."])
def test_order_ids_that_would_name_another_path_are_refused_before_any_call(sandbox, order_id):
    from core.vtex.client import VtexClient, VtexError

    client = VtexClient(base_url=sandbox.url, app_key=sandbox.app_key, app_token=TOKEN, timeout=5)

    with pytest.raises(VtexError, match="not a usable order id"):
        client.order_get(order_id)
    with pytest.raises(VtexError, match="not a usable order id"):
        client.order_start_handling(order_id)
    assert sandbox.requests == []
