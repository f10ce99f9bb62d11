"""Noting a lot of events at once (orders_note_events) gives what noting them one by one gives."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import Store
from core.vtex.client import FeedItem
from orders.models import OrderSync, SyncAttempt
from orders.services.events import order_note_event, orders_note_events

pytestmark = pytest.mark.django_db

READY = "ready-for-handling"
# A lot as a feed can hand it over: repeats of one new order, a cancel before its ready-for-handling, orders the
# hub already has in every state, and events needing no action in between.
LOT = [
    ("new-1", READY), ("new-1", READY), ("x-1", "handling"), ("canceled-first", "canceled"),
    ("canceled-first", READY), ("handled", READY), ("asleep", READY), ("sent", READY), ("invoiced", "invoiced"),
    ("new-2", READY), ("sent", "canceled"), ("new-2", "payment-approved"), ("new-3", READY),
]


def _store(name: str) -> Store:
    store = Store.objects.create(name=name, account=name, app_key="key", app_token="token")
    now = timezone.now()
    OrderSync.objects.create(store=store, order_id="handled", state=OrderSync.State.HANDLING_STARTED)
    OrderSync.objects.create(store=store, order_id="asleep", state=OrderSync.State.NEW, next_attempt_at=None)
    OrderSync.objects.create(store=store, order_id="sent", state=OrderSync.State.SENT_TO_ERP, next_attempt_at=None,
                             erp_accepted_at=now - timedelta(minutes=1))
    return store


def _items(lot: list[tuple[str, str]], happened) -> list[FeedItem]:
    return [FeedItem(raw={}, order_id=order_id, state=state, current_change=happened) for order_id, state in lot]


def _result(store: Store) -> tuple[dict, list]:
    orders = {sync.order_id: (sync.state, sync.cancel_pending, sync.next_attempt_at is not None)
              for sync in OrderSync.objects.filter(store=store)}
    timeline = sorted(SyncAttempt.objects.filter(order__store=store).values_list("order__order_id", "message"))
    return orders, timeline


def test_a_lot_noted_at_once_ends_as_if_each_event_were_noted_in_turn():
    at_once, in_turn = _store("at-once"), _store("in-turn")
    happened = timezone.now()

    outcomes = orders_note_events(store=at_once, items=_items(LOT, happened))
    expected = []
    for order_id, state in LOT:
        if state in (READY, "canceled", "invoiced"):
            expected.append((order_note_event(store=in_turn, order_id=order_id, state=state, happened_at=happened), ""))
        else:
            expected.append(("ignored", ""))

    assert outcomes == expected
    assert _result(at_once) == _result(in_turn)
    assert [outcome for outcome, _ in outcomes] == [
        "queued", "queued", "ignored", "ignored", "queued", "ignored", "queued", "queued", "ignored", "queued",
        "queued", "ignored", "queued"]
    orders, timeline = _result(at_once)
    assert orders["asleep"] == ("new", False, True)  # woken up
    assert orders["sent"] == ("sent_to_erp", True, True)  # the ERP has it: a cancel notice is owed
    assert [order for order, _ in timeline] == ["handled"]  # the one ready event an order past it ignores


def test_events_of_a_new_order_make_one_order():
    store = _store("one")
    outcomes = orders_note_events(store=store, items=_items([("n", READY)] * 3, None))
    assert [outcome for outcome, _ in outcomes] == ["queued"] * 3
    assert OrderSync.objects.filter(store=store, order_id="n").count() == 1
