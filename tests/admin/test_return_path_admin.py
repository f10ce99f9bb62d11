"""The return path on the order page: the ERP's invoices, tracking and cancels, "Resend invoice to VTEX" and
"Cancel on VTEX" (a reason and a confirmation page), for operators only; against the sandbox over HTTP."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from core.erp_api_key import erp_api_key_rotate
from orders.models import ErpRequest, OrderSync, SyncAttempt
from tests.helpers import run_sync

pytestmark = pytest.mark.django_db(transaction=True)
ITEMS = [{"id": "123", "price": 2000, "quantity": 2}, {"id": "456", "price": 1500, "quantity": 1}]
INVOICE = {"type": "Output", "invoiceNumber": "NF-1", "invoiceValue": 5500, "issuanceDate": "2026-11-28T12:00:00Z",
           "items": ITEMS, "courier": "Correios", "trackingNumber": "BR123"}


@pytest.fixture
def handled(sandbox, store) -> OrderSync:
    order_id = sandbox.create_order(items=ITEMS)
    run_sync()
    return OrderSync.objects.get(order_id=order_id)


def _invoice(store, sync: OrderSync) -> None:
    key = erp_api_key_rotate(store)
    answer = Client().post(f"/api/erp/{store.name}/orders/{sync.order_id}/invoice", data=json.dumps(INVOICE),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert answer.status_code == 202, answer.content


def _act(sync: OrderSync, action: str) -> str:
    return reverse("admin:orders_ordersync_act", args=[sync.pk, action])


def test_the_order_page_shows_the_invoice_its_tracking_and_vtex_receipt(sandbox, store, handled, viewer_client):
    _invoice(store, handled)
    run_sync()
    request = ErpRequest.objects.get(order=handled)

    page = viewer_client.get(reverse("admin:orders_ordersync_change", args=[handled.pk])).text

    row = page[page.index(f'data-hub="erp-request/{request.pk}"'):]
    assert "NF-1" in row and "5500" in row and "Correios BR123" in row and request.receipt in row
    assert "Confirmed" in row[:row.index("</tr>")]
    assert "Invoice to VTEX" in page  # the timeline's step
    assert 'id="hub-return-summary">invoiced (5500 of 5500 ¢); tracking sent' not in page  # tracking is in the invoice
    assert 'id="hub-return-summary">invoiced (5500 of 5500 ¢)</strong>' in page


def test_a_refused_invoice_is_resent_by_an_operator_but_not_by_a_viewer(sandbox, store, handled, operator_client,
                                                                       viewer_client, operator):
    sandbox.fail_next("invoice", 400, body=json.dumps({"error": {"code": "1", "message": "Invalid invoice key"}}))
    _invoice(store, handled)
    run_sync()
    assert ErpRequest.objects.get(order=handled).state == ErpRequest.State.REFUSED

    assert viewer_client.post(_act(handled, "resend_vtex")).status_code == 403
    assert ErpRequest.objects.get(order=handled).state == ErpRequest.State.REFUSED

    response = operator_client.post(_act(handled, "resend_vtex"))

    assert response.status_code == 302
    request = ErpRequest.objects.get(order=handled)
    assert request.state == ErpRequest.State.SENT or request.state == ErpRequest.State.CONFIRMED  # the job ran
    staff = SyncAttempt.objects.get(order=handled, step="staff")
    assert staff.triggered_by == operator.username and "1 request(s) sent again" in staff.message
    assert len(sandbox.order_summary(handled.order_id)["invoiceReceipts"]["NF-1"]) == 1


def test_cancel_on_vtex_asks_for_a_reason_and_a_confirmation(sandbox, store, handled, operator_client, operator):
    confirm = operator_client.post(_act(handled, "cancel_vtex"), {"reason": "fraud suspected"})
    assert confirm.status_code == 200 and "Yes, cancel on vtex" in confirm.text
    assert 'value="fraud suspected"' in confirm.text
    assert not ErpRequest.objects.exists()  # nothing before the confirmation

    no_reason = operator_client.post(_act(handled, "cancel_vtex"), {"confirm": "yes", "reason": " "})
    assert no_reason.status_code == 302 and not ErpRequest.objects.exists()

    done = operator_client.post(_act(handled, "cancel_vtex"), {"confirm": "yes", "reason": "fraud suspected"})

    assert done.status_code == 302
    request = ErpRequest.objects.get(order=handled)
    assert (request.kind, request.reason, request.requested_by) == ("cancel", "fraud suspected", operator.username)
    run_sync()
    assert sandbox.order_summary(handled.order_id)["status"] == "canceled"
    assert OrderSync.objects.get(pk=handled.pk).state == OrderSync.State.CANCELED


def test_cancel_on_vtex_of_an_invoiced_order_is_refused_with_the_reason(sandbox, store, handled, operator_client):
    _invoice(store, handled)
    run_sync()

    response = operator_client.post(_act(handled, "cancel_vtex"), {"confirm": "yes", "reason": "too late"},
                                    follow=True)

    assert "invoiced" in response.text
    assert not ErpRequest.objects.filter(kind="cancel").exists()
    assert sandbox.order_summary(handled.order_id)["status"] == "invoiced"


def test_a_viewer_cannot_cancel_on_vtex(sandbox, store, handled, viewer_client):
    assert viewer_client.post(_act(handled, "cancel_vtex"), {"confirm": "yes", "reason": "x"}).status_code == 403
    assert viewer_client.post(_act(handled, "cancel_vtex"), {"reason": "x"}).status_code == 403
    assert not ErpRequest.objects.exists()
