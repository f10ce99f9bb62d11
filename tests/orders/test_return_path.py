"""The return path over real HTTP: VTEX → hub → ERP → start-handling → the ERP posts its invoice (or a cancel)
to the hub → the hub carries it to VTEX (the sandbox) → the feed's invoiced / canceled event closes the loop."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone as dt_timezone

import pytest
from django.test import Client

from core.erp_api_key import erp_api_key_rotate
from core.models import Store
from orders.models import ErpRequest, OrderSync, SyncAttempt
from orders.services.vtex_requests import return_path_summary
from tests.helpers import run_sync

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def erp_key(store: Store) -> str:
    return erp_api_key_rotate(store)


def _handled(sandbox, n: int = 1, **order) -> list[str]:
    """n orders that the hub sent to the ERP and start-handled."""
    order_ids = [sandbox.create_order(**order) for _ in range(n)]
    run_sync()
    assert set(OrderSync.objects.filter(order_id__in=order_ids).values_list("state", flat=True)) == {"handling_started"}
    return order_ids


def _invoice(order_id: str, number: str, items: list[dict], value: int, kind: str = "Output") -> dict:
    return {"type": kind, "invoiceNumber": number, "invoiceValue": value,
            "issuanceDate": datetime(2026, 11, 28, 12, 0, tzinfo=dt_timezone.utc).isoformat(),
            "items": [{"id": item["id"], "price": item["price"], "quantity": item["quantity"]} for item in items]}


def _post(key: str, path: str, body: dict, **headers: str):
    return Client().post(path, data=json.dumps(body), content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {key}", **headers)


def _order_items(order_id: str) -> tuple[list[dict], int]:
    doc = OrderSync.objects.get(order_id=order_id).order_snapshot
    return [{"id": str(i["id"]), "price": i["sellingPrice"] if "sellingPrice" in i else i["price"],
             "quantity": i["quantity"]} for i in doc["items"]], int(doc["value"])


ITEMS = [{"id": "123", "price": 2000, "quantity": 2}, {"id": "456", "price": 1500, "quantity": 1}]  # 5,500


def test_an_invoice_posted_by_the_erp_reaches_vtex_and_the_feed_closes_the_loop(sandbox, store, erp_key):
    [order_id] = _handled(sandbox, items=ITEMS)
    items, total = _order_items(order_id)

    answer = _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoice", _invoice(order_id, "NF-1", items, total))
    assert answer.status_code == 202, answer.content
    request = ErpRequest.objects.get(pk=answer.json()["id"])
    assert request.state == ErpRequest.State.PENDING and OrderSync.objects.get(order_id=order_id).vtex_pending

    run_sync()  # sends the invoice, then reads the feed's `invoiced` event

    summary = sandbox.order_summary(order_id)
    assert summary["status"] == "invoiced" and summary["invoicedValue"] == total
    assert len(summary["invoiceReceipts"]["NF-1"]) == 1  # VTEX got it once
    request.refresh_from_db()
    assert request.state == ErpRequest.State.CONFIRMED and request.receipt in summary["invoiceReceipts"]["NF-1"]
    sync = OrderSync.objects.get(order_id=order_id)
    assert (sync.vtex_status, sync.vtex_pending, sync.next_attempt_at) == ("invoiced", False, None)
    steps = list(SyncAttempt.objects.filter(order=sync, step="vtex_invoice").values_list("outcome", "message"))
    assert {outcome for outcome, _ in steps} == {"ok"} and "accepted by VTEX" in steps[0][1]
    # The feed's event closes it, whether it came before VTEX's answer was saved or after.
    assert "VTEX already says invoiced" in steps[0][1] or "VTEX says invoiced" in steps[-1][1], steps


def test_two_partial_invoices_invoice_the_order_and_a_third_over_the_total_is_refused(sandbox, store, erp_key):
    [order_id] = _handled(sandbox, items=ITEMS)
    first = _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoice",
                  _invoice(order_id, "NF-1", [ITEMS[0]], 4000))
    assert first.status_code == 202, first.content
    run_sync()
    assert sandbox.order_summary(order_id)["status"] == "handling"  # partially invoiced: VTEX waits for the rest
    assert return_path_summary(OrderSync.objects.get(order_id=order_id)) == "partially invoiced (4000 of 5500 ¢)"

    second = _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoice", _invoice(order_id, "NF-2", [ITEMS[1]], 1500))
    assert second.status_code == 202, second.content
    run_sync()
    assert sandbox.order_summary(order_id)["status"] == "invoiced"

    third = _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoice", _invoice(order_id, "NF-3", [ITEMS[1]], 100))
    assert third.status_code == 400, third.content
    assert ErpRequest.objects.filter(order__order_id=order_id).count() == 2
    assert set(ErpRequest.objects.values_list("state", flat=True)) == {ErpRequest.State.CONFIRMED}


def test_the_erp_cancels_an_order_on_vtex_and_gets_no_cancel_notice_back(sandbox, store, erp_key):
    [order_id] = _handled(sandbox)

    answer = _post(erp_key, f"/api/erp/acme/orders/{order_id}/cancel", {"reason": "out of stock"})
    assert answer.status_code == 202, answer.content
    run_sync()

    assert sandbox.order_summary(order_id)["status"] == "canceled"
    sync = OrderSync.objects.get(order_id=order_id)
    assert sync.state == OrderSync.State.CANCELED and not sync.cancel_pending
    assert ErpRequest.objects.get(pk=answer.json()["id"]).state == ErpRequest.State.CONFIRMED
    assert not [d for d in sandbox.erp_deliveries if d.event == "order.canceled"]  # it asked: no notice back

    refused = _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoice",
                    _invoice(order_id, "NF-9", *_order_items(order_id)))
    assert refused.status_code == 409, refused.content  # canceled: nothing to invoice


def test_an_invoiced_order_cannot_be_canceled_and_the_erp_is_told_why(sandbox, store, erp_key):
    [order_id] = _handled(sandbox, items=ITEMS)
    assert _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoice",
                 _invoice(order_id, "NF-1", ITEMS, 5500)).status_code == 202
    run_sync()

    answer = _post(erp_key, f"/api/erp/acme/orders/{order_id}/cancel", {"reason": "changed my mind"})

    assert answer.status_code == 409 and "invoiced" in answer.content.decode()
    assert sandbox.order_summary(order_id)["status"] == "invoiced"


def test_the_same_invoice_posted_twice_reaches_vtex_once(sandbox, store, erp_key):
    [order_id] = _handled(sandbox, items=ITEMS)
    body = _invoice(order_id, "NF-1", ITEMS, 5500)

    first = _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoice", body, HTTP_IDEMPOTENCY_KEY="inv-1")
    again = _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoice", body, HTTP_IDEMPOTENCY_KEY="inv-1")
    run_sync()
    later = _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoice", body, HTTP_IDEMPOTENCY_KEY="inv-1")
    run_sync()

    assert first.status_code == again.status_code == later.status_code == 202
    assert first.json()["id"] == again.json()["id"] == later.json()["id"]
    assert len(sandbox.order_summary(order_id)["invoiceReceipts"]["NF-1"]) == 1


def test_vtex_failures_are_retried_and_a_timeout_after_vtex_acted_does_not_invoice_twice(sandbox, store, erp_key,
                                                                                           settings):
    settings.HUB_HTTP_TIMEOUT_SECONDS = 1.0
    [order_id] = _handled(sandbox, items=ITEMS)
    sandbox.fail_next("invoice", 503)
    sandbox.fail_next("invoice", 429, headers={"Retry-After": "1"})
    sandbox.fail_next("invoice", "timeout", delay_seconds=2)  # VTEX records it, then the answer never comes

    assert _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoice",
                 _invoice(order_id, "NF-1", ITEMS, 5500)).status_code == 202
    run_sync(timeout=90)

    summary = sandbox.order_summary(order_id)
    assert summary["status"] == "invoiced" and summary["invoicedValue"] == 5500  # not twice
    request = ErpRequest.objects.get(order__order_id=order_id)
    assert request.state == ErpRequest.State.CONFIRMED and request.attempts == 3
    outcomes = Counter(SyncAttempt.objects.filter(order=request.order, step="vtex_invoice")
                       .values_list("outcome", flat=True))
    assert outcomes == {"retry": 3, "ok": 2}


def test_an_invoice_stored_before_a_crash_is_sent_by_the_next_run(sandbox, store, erp_key):
    """Storing is the commitment: the 202 comes after the row is committed, and no process need be alive then."""
    [order_id] = _handled(sandbox, items=ITEMS)
    assert _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoice",
                 _invoice(order_id, "NF-1", ITEMS, 5500)).status_code == 202
    # (the web process could die here: the request is in the database, the order flagged and due)
    sync = OrderSync.objects.get(order_id=order_id)
    assert sync.vtex_pending and sync.next_attempt_at is not None

    run_sync()

    assert sandbox.order_summary(order_id)["status"] == "invoiced"


def test_an_invoice_vtex_refuses_is_marked_refused_and_the_order_stays_handled(sandbox, store, erp_key):
    [order_id] = _handled(sandbox, items=ITEMS)
    sandbox.fail_next("invoice", 400, body=json.dumps({"error": {"code": "1", "message": "Invalid invoice"}}))
    assert _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoice",
                 _invoice(order_id, "NF-1", ITEMS, 5500)).status_code == 202

    run_sync()

    request = ErpRequest.objects.get(order__order_id=order_id)
    assert request.state == ErpRequest.State.REFUSED and "Invalid invoice" in request.last_error
    sync = OrderSync.objects.get(order_id=order_id)
    assert (sync.state, sync.vtex_pending, sync.next_attempt_at) == ("handling_started", False, None)


def test_the_dashboard_counts_refused_requests_and_invoices_the_feed_never_confirmed(sandbox, store, erp_key,
                                                                                      settings):
    from django.utils import timezone

    from orders.dashboard import store_healths

    settings.HUB_INVOICE_CONFIRM_MINUTES = 0
    refused_id, silent_id = _handled(sandbox, n=2, items=ITEMS)
    sandbox.fail_next("invoice", 400, body=json.dumps({"error": {"code": "1", "message": "Invalid invoice"}}))
    assert _post(erp_key, f"/api/erp/acme/orders/{refused_id}/invoice",
                 _invoice(refused_id, "NF-1", ITEMS, 5500)).status_code == 202
    run_sync()
    sandbox.drop_feed_events_for = {silent_id}  # VTEX invoices it, but its invoiced event never arrives
    assert _post(erp_key, f"/api/erp/acme/orders/{silent_id}/invoice",
                 _invoice(silent_id, "NF-2", ITEMS, 5500)).status_code == 202
    waiting = store_healths(now=timezone.now())[0].returns
    run_sync()

    [health] = store_healths(now=timezone.now())
    assert (waiting.waiting, health.returns.waiting, health.returns.refused, health.returns.unconfirmed) == (1, 0, 1, 1)
    assert sandbox.order_summary(silent_id)["status"] == "invoiced"


def test_tracking_added_later_reaches_vtex_after_its_invoice(sandbox, store, erp_key):
    [order_id] = _handled(sandbox, items=ITEMS)
    # Tracking posted right after its invoice, before either went out: it follows the invoice, in order.
    assert _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoice",
                 _invoice(order_id, "NF-1", ITEMS, 5500)).status_code == 202
    tracking = {"trackingNumber": "BR998877", "trackingUrl": "https://track.example.com/BR998877",
                "courier": "Correios", "dispatchedDate": "2026-11-28T15:00:00Z"}
    answer = _post(erp_key, f"/api/erp/acme/orders/{order_id}/invoices/NF-1/tracking", tracking)
    assert answer.status_code == 202, answer.content

    run_sync()

    [package] = sandbox.order_summary(order_id)["packages"]
    assert (package["invoiceNumber"], package["trackingNumber"], package["courier"]) == ("NF-1", "BR998877",
                                                                                         "Correios")
    assert ErpRequest.objects.get(pk=answer.json()["id"]).state == ErpRequest.State.SENT
    steps = list(SyncAttempt.objects.filter(order__order_id=order_id, step__in=["vtex_invoice", "vtex_tracking"])
                 .order_by("created_at", "id").values_list("step", flat=True))
    assert steps.index("vtex_invoice") < steps.index("vtex_tracking"), steps
