"""What the apps above register with the ones below at start-up, since imports only go down (tests/test_layers.py)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from core.models import Store
from core.stores import store_connect
from core.vtex.client import FeedItem
from feeds import services
from feeds.feed_config import DEFAULT_FEED_STATUSES
from feeds.models import FeedConfig, FeedEvent
from orders.models import OrderSync
from orders.services.events import orders_note_events

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop() -> Store:
    return store_connect(name="shop", account="shop", app_key="vtexappkey-shop-HUB", app_token="app-token-1",
                         base_url="http://127.0.0.1:9", erp_url="http://127.0.0.1:9/erp").store


def _ready(order_id: str) -> FeedItem:
    return FeedItem(raw={"orderId": order_id, "state": "ready-for-handling"}, handle=f"handle-{order_id}",
                    event_id=f"ev-{order_id}", order_id=order_id, state="ready-for-handling")


def test_a_connected_store_gets_the_default_feed_configuration_feeds_registered(shop):
    assert FeedConfig.objects.get(store=shop).statuses == DEFAULT_FEED_STATUSES


def test_orders_registers_the_order_work_of_every_stored_event(shop):
    assert services._event_work is orders_note_events

    [event] = services.events_store_batch(store=shop, items=[_ready("ORD-1")])

    assert event.outcome == FeedEvent.Outcome.QUEUED and OrderSync.objects.filter(order_id="ORD-1").exists()


def test_without_registered_order_work_no_event_is_stored(shop, monkeypatch):
    monkeypatch.setattr(services, "_event_work", None)

    with pytest.raises(ImproperlyConfigured, match="no order work is registered"):
        services.events_store_batch(store=shop, items=[_ready("ORD-2")])

    assert not FeedEvent.objects.exists() and not OrderSync.objects.exists()
