"""What an operator does, in a real headless Chromium: find the parked order, retry it, watch it finish."""

from __future__ import annotations

import pytest

from orders.models import OrderSync
from tests.browser.conftest import login, shoot
from tests.helpers import run_sync

pytestmark = pytest.mark.django_db(transaction=True)


def test_operator_filters_needs_attention_and_retries_an_order(page, live_server, sandbox, store, operator):
    sandbox.create_orders(3)
    sandbox.fail_next("erp", 422, body='{"error": "unknown SKU 4711"}')
    run_sync()
    parked = OrderSync.objects.get(state="needs_attention")

    login(page, live_server, operator)
    page.goto(f"{live_server.url}/admin/orders/ordersync/")
    page.locator("#changelist-filter").get_by_role("link", name="Needs attention").click()
    page.wait_for_url("**state__exact=needs_attention**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert parked.order_id in rows.first.inner_text()
    assert "unknown SKU 4711" in rows.first.inner_text()
    shoot(page, "order-list-needs-attention")

    rows.first.get_by_role("link", name=parked.order_id).click()
    page.wait_for_selector("#hub-timeline")
    assert "Needs attention" in page.inner_text("#content")
    page.get_by_role("button", name="Retry now").click()

    page.wait_for_selector("ul.messagelist")
    assert f"{parked.order_id}: queued for retry" in page.inner_text("ul.messagelist")
    assert "Handling started" in page.inner_text("#content")
    timeline = page.inner_text("#hub-timeline")
    assert "Retry now requested by otto-operator" in timeline
    assert "Start handling" in timeline and "204" in timeline
    shoot(page, "order-detail")
    parked.refresh_from_db()
    assert parked.state == "handling_started"
    assert sandbox.order(parked.order_id)["status"] == "handling"
