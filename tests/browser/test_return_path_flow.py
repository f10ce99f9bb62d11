"""The return path in a real headless Chromium: the ERP's invoice on the order page, and an operator who
cancels another order on VTEX through the reason and confirmation page."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from core.erp_api_key import erp_api_key_rotate
from orders.models import OrderSync
from tests.browser.conftest import login, shoot
from tests.helpers import run_sync

pytestmark = pytest.mark.django_db(transaction=True)
ITEMS = [{"id": "123", "price": 2000, "quantity": 2}, {"id": "456", "price": 1500, "quantity": 1}]


def test_operator_sees_the_invoice_and_cancels_another_order_on_vtex(page, live_server, sandbox, store, operator):
    invoiced_id, other_id = sandbox.create_order(items=ITEMS), sandbox.create_order(items=ITEMS)
    run_sync()
    key = erp_api_key_rotate(store)
    body = {"type": "Output", "invoiceNumber": "NF-77", "invoiceValue": "5500", "issuanceDate": "2026-11-28T12:00:00Z",
            "items": ITEMS, "courier": "Correios", "trackingNumber": "BR77"}
    assert Client().post(f"/api/erp/acme/orders/{invoiced_id}/invoice", data=json.dumps(body),
                         content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 202
    run_sync()

    login(page, live_server, operator)
    invoiced = OrderSync.objects.get(order_id=invoiced_id)
    page.goto(f"{live_server.url}/admin/orders/ordersync/{invoiced.pk}/change/")
    section = page.inner_text("#hub-erp-requests")
    assert "NF-77" in section and "Correios BR77" in section and "Confirmed" in section
    assert "invoiced (5500 of 5500 ¢)" in page.inner_text("#hub-return-summary")
    shoot(page, "order-return-path")

    other = OrderSync.objects.get(order_id=other_id)
    page.goto(f"{live_server.url}/admin/orders/ordersync/{other.pk}/change/")
    page.get_by_label("Reason for cancel on vtex").fill("customer asked by phone")
    page.get_by_role("button", name="Cancel on VTEX").click()
    page.wait_for_selector("#hub-confirm")
    assert "VTEX cancels the order for good" in page.inner_text("#hub-confirm")
    page.get_by_role("button", name="Yes, cancel on vtex").click()

    page.wait_for_selector("ul.messagelist")
    assert f"{other_id}: queued to be canceled on VTEX" in page.inner_text("ul.messagelist")
    run_sync()
    page.reload()
    assert "Canceled" in page.inner_text("#hub-state")
    assert "Cancel on VTEX requested by otto-operator: customer asked by phone" in page.inner_text("#hub-timeline")
    assert sandbox.order_summary(other_id)["status"] == "canceled"
