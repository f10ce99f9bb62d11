"""The ERP's API (issue 10): invoices, tracking and cancels posted by the ERP, checked, then recorded for VTEX.

Requests go through Django's test client to the real views, against the database; VTEX's order documents
come from the sandbox's own order builder, and the recorded bodies are checked with the sandbox's parsers,
which follow VTEX's spec strictly.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from core.erp_api_key import erp_api_key_rotate
from core.models import Store
from core.stores import store_connect
from orders.erp_api import MAX_BODY_BYTES
from orders.models import ErpRequest, OrderSync
from sandbox import invoices as vtex_rules
from sandbox.server import Sandbox
from tests.admin.conftest import staff_groups_recreate

ROOT = Path(__file__).resolve().parents[2]
SHARED_EXAMPLES = ROOT.parent / "shared" / "vtex" / "examples"
SANDBOX_FIXTURES = ROOT / "sandbox" / "fixtures"
BASE = "/api/erp/{store}/orders/{order}"
ISSUED = "2026-03-01T10:00:00-03:00"


# --- helpers -----------------------------------------------------------------------------------------

@pytest.fixture
def vtex() -> Sandbox:
    """The sandbox's order builder only (no server): VTEX's Get-order documents with the items a test picks."""
    return Sandbox(seed=11)


def _store(name: str = "shop") -> tuple[Store, str]:
    store = store_connect(name=name, account=name, app_key=f"vtexappkey-{name}-HUB", app_token="app-token-1",
                          base_url="http://127.0.0.1:9", erp_url="http://127.0.0.1:9/erp").store
    return store, erp_api_key_rotate(store)


def _order(vtex: Sandbox, store: Store, items: list[dict[str, Any]], *, status: str = "handling",
           snapshot: bool = True, **fields: Any) -> OrderSync:
    order_id = vtex.create_order(items=items, status=status)
    return OrderSync.objects.create(store=store, order_id=order_id, state=OrderSync.State.HANDLING_STARTED,
                                    vtex_status=status, order_snapshot=vtex.order(order_id) if snapshot else None,
                                    **fields)


def _post(client: Client, url: str, body: Any, *, key: str | None, idempotency_key: str | None = None,
          method: str = "POST"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return client.generic(method, url, data, content_type="application/json", headers=headers)


def _invoice(number: str = "NF-1", *, value: Any = 2000, items: list[dict] | None = None, kind: str = "Output",
             **changes: Any) -> dict[str, Any]:
    body = {"type": kind, "issuanceDate": ISSUED, "invoiceNumber": number, "invoiceValue": value,
            "items": items if items is not None else [{"id": "A", "price": 1000, "quantity": 2}]}
    body.update(changes)
    return body


def _written() -> tuple[list, list]:
    """Everything a request may write: the ERP requests, and the orders' flags and times."""
    return (list(ErpRequest.objects.order_by("pk").values()),
            list(OrderSync.objects.order_by("pk").values("pk", "vtex_pending", "next_attempt_at", "updated_at")))


def _refused(response, status: int, field: str | None = None) -> str:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error.get("field") == field, error
    assert error["reason"]
    return error["reason"]


@pytest.fixture
def shop(db, vtex):
    """A store with its key, and an order of SKU A (2 × 1000) and SKU B (1 × 500): total 2500."""
    store, key = _store()
    order = _order(vtex, store, [{"id": "A", "price": 1000, "quantity": 2}, {"id": "B", "price": 500, "quantity": 1}])
    return store, key, order


def _url(order: OrderSync, what: str = "invoice") -> str:
    return BASE.format(store=order.store.name, order=order.order_id) + "/" + what


# --- VTEX's own payloads -------------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("where", ["sandbox", "shared"])
def test_vtex_example_invoice_is_accepted_as_it_is(client, vtex, where):
    path = (SANDBOX_FIXTURES if where == "sandbox" else SHARED_EXAMPLES) / "invoice-notification-request.json"
    if not path.exists():
        pytest.skip(f"VTEX's examples are not beside the repository ({path})")
    raw = path.read_bytes()
    example = json.loads(raw)
    store, key = _store()
    order = _order(vtex, store, [{"id": "123", "price": 2499, "quantity": 2}])  # the example's SKU

    response = _post(client, _url(order), raw, key=key)

    assert response.status_code == 202, response.content
    saved = ErpRequest.objects.get()
    assert response.json() == {"id": saved.pk, "state": "pending", "kind": "invoice"}
    # Stored exactly as VTEX will receive it: the example was already in VTEX's types.
    assert saved.payload == example
    assert (saved.kind, saved.state, saved.invoice_number, saved.invoice_type, saved.invoice_value) == (
        "invoice", "pending", "DFG-v7731485plzv-01", "Output", 2499)
    assert saved.idempotency_key == "invoice:DFG-v7731485plzv-01" and saved.requested_by == "erp"
    vtex_rules.parse_invoice(saved.payload)  # VTEX's rules, as strict as the sandbox keeps them


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["sandbox", "shared"])
def test_vtex_example_cancel_is_accepted_as_it_is(client, vtex, where):
    path = (SANDBOX_FIXTURES if where == "sandbox" else SHARED_EXAMPLES) / "cancel-order-request.json"
    if not path.exists():
        pytest.skip(f"VTEX's examples are not beside the repository ({path})")
    store, key = _store()
    order = _order(vtex, store, [{"id": "A", "price": 1000, "quantity": 1}])

    response = _post(client, _url(order, "cancel"), path.read_bytes(), key=key)

    assert response.status_code == 202, response.content
    saved = ErpRequest.objects.get()
    assert saved.payload == json.loads(path.read_bytes()) == {"reason": "Unexpected stock shortage",
                                                              "requestedByUser": False}
    assert (saved.kind, saved.reason, saved.idempotency_key) == ("cancel", "Unexpected stock shortage", "cancel")


@pytest.mark.django_db
def test_amounts_as_json_integers_or_strings_of_digits_are_stored_as_vtex_types_them(client, shop):
    store, key, order = shop
    body = _invoice(value=2000, items=[{"id": "A", "price": "1000", "quantity": "2"}])

    response = _post(client, _url(order), body, key=key)

    assert response.status_code == 202, response.content
    payload = ErpRequest.objects.get().payload
    # VTEX wants invoiceValue as a string of cents (the sandbox refuses an integer), prices and quantities as ints.
    assert payload["invoiceValue"] == "2000"
    assert payload["items"] == [{"id": "A", "price": 1000, "quantity": 2}]
    vtex_rules.parse_invoice(payload)


@pytest.mark.django_db
def test_an_accepted_request_makes_the_order_due_and_leaves_its_claim_alone(client, shop):
    store, key, order = shop
    later = timezone.now() + timedelta(hours=1)
    OrderSync.objects.filter(pk=order.pk).update(next_attempt_at=later, claim_token="worker-1",
                                                 claimed_until=later)
    before = timezone.now()

    response = _post(client, _url(order), _invoice(), key=key)

    assert response.status_code == 202
    order.refresh_from_db()
    assert order.vtex_pending is True
    assert before <= order.next_attempt_at <= timezone.now()  # due now, not after the backoff it was waiting out
    assert (order.claim_token, order.claimed_until) == ("worker-1", later)


@pytest.mark.django_db
def test_an_order_due_earlier_keeps_its_time(client, shop):
    store, key, order = shop
    earlier = timezone.now() - timedelta(minutes=5)
    OrderSync.objects.filter(pk=order.pk).update(next_attempt_at=earlier)

    assert _post(client, _url(order), _invoice(), key=key).status_code == 202

    order.refresh_from_db()
    assert order.vtex_pending is True and order.next_attempt_at == earlier


@pytest.mark.django_db
def test_it_needs_no_csrf_token_session_or_login(shop):
    store, key, order = shop

    response = _post(Client(enforce_csrf_checks=True), _url(order), _invoice(), key=key)

    assert response.status_code == 202
    assert "sessionid" not in response.cookies and "csrftoken" not in response.cookies


# --- bad input: 400 with the field and the reason, nothing stored ----------------------------------------

BAD_INVOICES = [
    # (what, body, field)
    ("a decimal amount", _invoice(value=20.00), "invoiceValue"),
    ("an amount with a separator", _invoice(value="20,00"), "invoiceValue"),
    ("an amount with a sign", _invoice(value="-2000"), "invoiceValue"),
    ("a zero amount", _invoice(value=0), "invoiceValue"),
    ("a negative amount", _invoice(value=-2000), "invoiceValue"),
    ("a boolean amount", _invoice(value=True), "invoiceValue"),
    ("no amount", {k: v for k, v in _invoice().items() if k != "invoiceValue"}, "invoiceValue"),
    ("a decimal price", _invoice(items=[{"id": "A", "price": 10.5, "quantity": 2}]), "items[0].price"),
    ("a negative price", _invoice(items=[{"id": "A", "price": -1, "quantity": 2}]), "items[0].price"),
    ("no quantity", _invoice(items=[{"id": "A", "price": 1000}]), "items[0].quantity"),
    ("a zero quantity", _invoice(items=[{"id": "A", "price": 1000, "quantity": 0}]), "items[0].quantity"),
    ("a numeric SKU id", _invoice(items=[{"id": 7, "price": 1000, "quantity": 1}]), "items[0].id"),
    ("an unknown item field", _invoice(items=[{"id": "A", "price": 1000, "quantity": 2, "qty": 2}]),
     "items[0].qty"),
    ("no items", _invoice(items=[]), "items"),
    ("an unknown type", _invoice(kind="Sale"), "type"),
    ("a date without time", _invoice(issuanceDate="2026-03-01"), "issuanceDate"),
    ("a date that is no date", _invoice(issuanceDate="2026-13-45T10:00:00Z"), "issuanceDate"),
    ("an empty invoice number", _invoice(number=" "), "invoiceNumber"),
    ("an invoice number over 100 characters", _invoice(number="N" * 101), "invoiceNumber"),
    ("an invoice number with a line break", _invoice(number="NF\n1"), "invoiceNumber"),
    ("a courier that is no text", _invoice(courier=5), "courier"),
    ("a misspelt field", _invoice(invoicevalue="2000"), "invoicevalue"),
    ("a SKU the order does not have", _invoice(value=1000, items=[{"id": "Z", "price": 1000, "quantity": 1}]),
     "items[0].id"),
    ("more of a SKU than the order has", _invoice(value=1500, items=[{"id": "B", "price": 500, "quantity": 3}]),
     "items[0].quantity"),
    ("more than the order's total", _invoice(value=2501), "invoiceValue"),
    ("an array", [1, 2], "body"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("what, body, field", BAD_INVOICES, ids=[case[0] for case in BAD_INVOICES])
def test_a_bad_invoice_answers_400_with_the_field_and_stores_nothing(client, shop, what, body, field):
    store, key, order = shop
    before = _written()

    response = _post(client, _url(order), body, key=key)

    _refused(response, 400, field)
    assert _written() == before


@pytest.mark.django_db
@pytest.mark.parametrize("raw", [b'{"type": "Output",', b"", b'{"invoiceValue": NaN}', b'"\xff"',
                                 b'{"reason": "a\\u0000b"}'])
def test_a_body_that_is_not_json_answers_400_and_stores_nothing(client, shop, raw):
    store, key, order = shop
    before = _written()

    _refused(_post(client, _url(order, "cancel"), raw, key=key), 400, "body")
    assert _written() == before


@pytest.mark.django_db
@pytest.mark.parametrize("body, field", [
    ({}, "reason"),
    ({"reason": "   "}, "reason"),
    ({"reason": "x" * 501}, "reason"),
    ({"reason": "out of stock", "requestedByUser": "no"}, "requestedByUser"),
    ({"reason": "out of stock", "why": "x"}, "why"),
])
def test_a_bad_cancel_answers_400_and_stores_nothing(client, shop, body, field):
    store, key, order = shop
    before = _written()

    _refused(_post(client, _url(order, "cancel"), body, key=key), 400, field)
    assert _written() == before


@pytest.mark.django_db
def test_an_idempotency_key_that_is_no_header_value_answers_400(client, shop):
    store, key, order = shop

    _refused(_post(client, _url(order), _invoice(), key=key, idempotency_key="k" * 201), 400, "Idempotency-Key")
    assert ErpRequest.objects.count() == 0


# --- 401, 404, 405, 413 --------------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("authorization", [None, "Bearer hubk_wrong", "Basic dXNlcjpwdw==", "Bearer ", "hubk_x"])
def test_a_missing_or_wrong_key_answers_401_and_stores_nothing(client, shop, authorization):
    store, key, order = shop
    before = _written()
    headers = {"Authorization": authorization} if authorization else {}

    response = client.post(_url(order), json.dumps(_invoice()), content_type="application/json", headers=headers)

    _refused(response, 401)
    assert response["WWW-Authenticate"] == 'Bearer realm="erp"'
    assert _written() == before


@pytest.mark.django_db
def test_another_stores_key_answers_401(client, shop):
    store, key, order = shop
    _, other_key = _store("other")

    _refused(_post(client, _url(order), _invoice(), key=other_key), 401)
    assert ErpRequest.objects.count() == 0


@pytest.mark.django_db
def test_a_store_without_a_key_refuses_every_call(client, vtex):
    store = store_connect(name="nokey", account="nokey", app_key="k", app_token="t",
                          base_url="http://127.0.0.1:9", erp_url="http://127.0.0.1:9/erp").store
    order = _order(vtex, store, [{"id": "A", "price": 1000, "quantity": 1}])

    for presented in (None, "", "hubk_"):
        _refused(_post(client, _url(order), _invoice(), key=presented), 401)
    assert ErpRequest.objects.count() == 0


@pytest.mark.django_db
def test_an_unknown_or_disabled_store_answers_404_before_the_key_is_checked(client, shop):
    store, key, order = shop
    url = BASE.format(store="nosuchstore", order=order.order_id) + "/invoice"

    _refused(_post(client, url, _invoice(), key=None), 404)  # the documented choice: store names are not secret
    Store.objects.filter(pk=store.pk).update(enabled=False)
    _refused(_post(client, _url(order), _invoice(), key=key), 404)
    assert ErpRequest.objects.count() == 0


@pytest.mark.django_db
def test_an_unknown_order_or_another_stores_order_answers_404(client, shop, vtex):
    store, key, order = shop
    other, _ = _store("other")
    theirs = _order(vtex, other, [{"id": "A", "price": 1000, "quantity": 2}])
    before = _written()

    unknown = _post(client, BASE.format(store="shop", order="v999-01") + "/invoice", _invoice(), key=key)
    not_ours = _post(client, BASE.format(store="shop", order=theirs.order_id) + "/invoice", _invoice(), key=key)

    assert "not known" in _refused(unknown, 404)
    _refused(not_ours, 404)
    assert _written() == before


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_answer_405_in_json(client, shop, method):
    store, key, order = shop

    response = _post(client, _url(order), _invoice(), key=key, method=method)

    _refused(response, 405)
    assert response["Allow"] == "POST"
    assert ErpRequest.objects.count() == 0


@pytest.mark.django_db
def test_a_body_over_64_kib_answers_413_and_stores_nothing(client, shop):
    store, key, order = shop
    body = _invoice(embeddedInvoice="<NFe>" + "x" * MAX_BODY_BYTES + "</NFe>")
    before = _written()

    _refused(_post(client, _url(order), body, key=key), 413)
    assert _written() == before


@pytest.mark.django_db
def test_an_order_the_hub_has_not_read_from_vtex_yet_answers_409(client, vtex):
    store, key = _store()
    order = _order(vtex, store, [{"id": "A", "price": 1000, "quantity": 2}], snapshot=False)
    before = _written()

    reason = _refused(_post(client, _url(order), _invoice(), key=key), 409)

    assert "has not received this order" in reason
    assert _written() == before


# --- the order's amounts and quantities -----------------------------------------------------------------

@pytest.mark.django_db
def test_two_partial_invoices_are_accepted_and_a_third_over_the_total_is_refused(client, shop):
    store, key, order = shop  # total 2500: A 2 × 1000, B 1 × 500
    first = _post(client, _url(order), _invoice("NF-1", value=1000, items=[{"id": "A", "price": 1000,
                                                                            "quantity": 1}]), key=key)
    second = _post(client, _url(order), _invoice("NF-2", value="1500", items=[
        {"id": "A", "price": 1000, "quantity": 1}, {"id": "B", "price": 500, "quantity": 1}]), key=key)
    before = _written()

    third = _post(client, _url(order), _invoice("NF-3", value=1, items=[{"id": "B", "price": 1,
                                                                         "quantity": 1}]), key=key)

    assert (first.status_code, second.status_code) == (202, 202)
    assert "exceeds what is left to invoice" in _refused(third, 400, "invoiceValue")
    assert _written() == before
    assert list(ErpRequest.objects.values_list("invoice_number", "invoice_value")) == [("NF-1", 1000),
                                                                                       ("NF-2", 1500)]


@pytest.mark.django_db
def test_quantities_are_summed_over_the_orders_invoices(client, shop):
    store, key, order = shop
    assert _post(client, _url(order), _invoice("NF-1", value=1000, items=[{"id": "A", "price": 1000,
                                                                            "quantity": 1}]), key=key).status_code == 202

    response = _post(client, _url(order), _invoice("NF-2", value=1000, items=[
        {"id": "A", "price": 500, "quantity": 1}, {"id": "A", "price": 500, "quantity": 1}]), key=key)

    assert "3 invoiced as Output in all, but the order has 2" in _refused(response, 400, "items[1].quantity")
    assert ErpRequest.objects.count() == 1


@pytest.mark.django_db
def test_an_invoice_vtex_refused_does_not_count(client, shop):
    store, key, order = shop
    assert _post(client, _url(order), _invoice("NF-1", value=2500), key=key).status_code == 202
    ErpRequest.objects.update(state=ErpRequest.State.REFUSED)

    response = _post(client, _url(order), _invoice("NF-2", value=2500), key=key)

    assert response.status_code == 202, response.content


@pytest.mark.django_db
def test_invoices_vtex_already_has_count_toward_the_total(client, shop):
    store, key, order = shop
    # Invoiced by another system: VTEX's document lists it as a package, by item index.
    order.order_snapshot["packageAttachment"] = {"packages": [
        {"invoiceNumber": "OLD-1", "type": "Output", "invoiceValue": 2000, "items": [{"itemIndex": 0, "quantity": 2}]}]}
    order.save()

    over_total = _post(client, _url(order), _invoice("NF-1", value=600, items=[{"id": "B", "price": 500,
                                                                                "quantity": 1}]), key=key)
    over_quantity = _post(client, _url(order), _invoice("NF-1", value=500, items=[{"id": "A", "price": 500,
                                                                                   "quantity": 1}]), key=key)
    rest = _post(client, _url(order), _invoice("NF-1", value=500, items=[{"id": "B", "price": 500,
                                                                          "quantity": 1}]), key=key)

    _refused(over_total, 400, "invoiceValue")
    _refused(over_quantity, 400, "items[0].quantity")
    assert rest.status_code == 202


@pytest.mark.django_db
def test_a_return_invoice_waits_for_the_order_to_be_fully_invoiced(client, shop):
    store, key, order = shop
    ret = _invoice("RET-1", kind="Input", value=1000, items=[{"id": "A", "price": 1000, "quantity": 1}])
    assert _post(client, _url(order), _invoice("NF-1", value=2000), key=key).status_code == 202
    before = _written()

    early = _post(client, _url(order), ret, key=key)
    assert "fully invoiced: 2000 of 2500" in _refused(early, 409, "type")
    assert _written() == before

    assert _post(client, _url(order), _invoice("NF-2", value=500, items=[{"id": "B", "price": 500,
                                                                          "quantity": 1}]), key=key).status_code == 202
    returned = _post(client, _url(order), ret, key=key)
    too_much = _post(client, _url(order), _invoice("RET-2", kind="Input", value=1600, items=[
        {"id": "A", "price": 1000, "quantity": 1}]), key=key)

    assert returned.status_code == 202
    assert ErpRequest.objects.get(pk=returned.json()["id"]).payload["type"] == "Input"
    assert "left to return" in _refused(too_much, 400, "invoiceValue")


@pytest.mark.django_db
def test_a_canceled_order_cannot_be_invoiced(client, shop):
    store, key, order = shop
    OrderSync.objects.filter(pk=order.pk).update(state=OrderSync.State.CANCELED)

    assert "canceled" in _refused(_post(client, _url(order), _invoice(), key=key), 409)
    assert ErpRequest.objects.count() == 0


# --- cancel ----------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_an_invoiced_order_cannot_be_canceled_and_the_erp_is_told_why(client, shop):
    store, key, order = shop
    assert _post(client, _url(order), _invoice("NF-1", value=1000, items=[{"id": "A", "price": 1000,
                                                                            "quantity": 1}]), key=key).status_code == 202
    before = _written()

    response = _post(client, _url(order, "cancel"), {"reason": "out of stock"}, key=key)

    assert "VTEX refuses to cancel an invoiced order" in _refused(response, 409)
    assert _written() == before


@pytest.mark.django_db
def test_an_order_vtex_shows_invoiced_cannot_be_canceled(client, vtex):
    store, key = _store()
    order = _order(vtex, store, [{"id": "A", "price": 1000, "quantity": 1}], status="invoiced")

    _refused(_post(client, _url(order, "cancel"), {"reason": "out of stock"}, key=key), 409)
    assert ErpRequest.objects.count() == 0


@pytest.mark.django_db
def test_a_cancel_is_recorded_once(client, shop):
    store, key, order = shop
    first = _post(client, _url(order, "cancel"), {"reason": " out of stock "}, key=key)
    again = _post(client, _url(order, "cancel"), {"reason": "out of stock"}, key=key)
    other = _post(client, _url(order, "cancel"), {"reason": "fraud"}, key=key, idempotency_key="cancel-2")

    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert "a cancel of this order was already recorded with different content" in _refused(other, 409)
    saved = ErpRequest.objects.get()
    assert (saved.payload, saved.reason) == ({"reason": "out of stock"}, "out of stock")


@pytest.mark.django_db
def test_an_already_canceled_order_answers_409(client, shop):
    store, key, order = shop
    OrderSync.objects.filter(pk=order.pk).update(state=OrderSync.State.CANCELED)

    assert "already canceled" in _refused(_post(client, _url(order, "cancel"), {"reason": "x"}, key=key), 409)


# --- tracking --------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_tracking_of_a_recorded_invoice_is_recorded_with_all_four_of_vtexs_fields(client, shop):
    store, key, order = shop
    assert _post(client, _url(order), _invoice("NF/1"), key=key).status_code == 202
    url = _url(order, "invoices/NF/1/tracking")  # an invoice number may hold a slash

    first = _post(client, url, {"trackingNumber": "TRK-1", "courier": "Correios"}, key=key)
    again = _post(client, url, {"trackingNumber": "TRK-1", "courier": "Correios"}, key=key)
    changed = _post(client, url, {"trackingNumber": "TRK-1", "courier": "Correios",
                                  "trackingUrl": "https://track.example/TRK-1",
                                  "dispatchedDate": "2026-03-02T09:00:00.1234567+00:00"}, key=key)

    assert first.status_code == again.status_code == changed.status_code == 202
    assert first.json()["id"] == again.json()["id"] != changed.json()["id"]
    saved = ErpRequest.objects.get(pk=first.json()["id"])
    assert saved.payload == {"trackingNumber": "TRK-1", "trackingUrl": None, "courier": "Correios",
                             "dispatchedDate": None}
    assert (saved.kind, saved.invoice_number) == ("tracking", "NF/1")
    assert saved.idempotency_key.startswith("tracking:NF/1:") and len(saved.idempotency_key) == len("tracking:NF/1:") + 16
    vtex_rules.parse_tracking(saved.payload)  # VTEX's PATCH requires the four keys


@pytest.mark.django_db
def test_tracking_of_an_unknown_invoice_answers_404(client, shop):
    store, key, order = shop

    response = _post(client, _url(order, "invoices/NF-9/tracking"), {"trackingNumber": "TRK-1"}, key=key)

    assert "is not an invoice of order" in _refused(response, 404, "invoiceNumber")
    assert ErpRequest.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("body, field", [
    ({}, "trackingNumber"),
    ({"trackingNumber": ""}, "trackingNumber"),
    ({"trackingNumber": "TRK-1", "dispatchedDate": "yesterday"}, "dispatchedDate"),
    ({"trackingNumber": "TRK-1", "carrier": "x"}, "carrier"),
])
def test_bad_tracking_answers_400(client, shop, body, field):
    store, key, order = shop
    assert _post(client, _url(order), _invoice("NF-1"), key=key).status_code == 202
    before = _written()

    _refused(_post(client, _url(order, "invoices/NF-1/tracking"), body, key=key), 400, field)
    assert _written() == before


# --- idempotency -----------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_same_idempotency_key_and_body_is_the_same_request(client, shop):
    store, key, order = shop

    first = _post(client, _url(order), _invoice(), key=key, idempotency_key="erp-req-77")
    OrderSync.objects.filter(pk=order.pk).update(vtex_pending=False, next_attempt_at=None)  # as if sent since
    again = _post(client, _url(order), _invoice(), key=key, idempotency_key="erp-req-77")

    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert ErpRequest.objects.get().idempotency_key == "erp-req-77"
    order.refresh_from_db()
    assert (order.vtex_pending, order.next_attempt_at) == (False, None)  # nothing new to send


@pytest.mark.django_db
def test_the_same_invoice_number_and_body_is_the_same_request_whatever_the_key(client, shop):
    store, key, order = shop

    first = _post(client, _url(order), _invoice(value="2000"), key=key)
    again = _post(client, _url(order), _invoice(value=2000), key=key, idempotency_key="another-key")

    assert first.json()["id"] == again.json()["id"]
    assert ErpRequest.objects.count() == 1


@pytest.mark.django_db
def test_the_same_invoice_number_with_other_content_answers_409(client, shop):
    store, key, order = shop
    assert _post(client, _url(order), _invoice(value=2000), key=key).status_code == 202
    before = _written()

    response = _post(client, _url(order), _invoice(value=1000, items=[{"id": "A", "price": 1000, "quantity": 1}]),
                     key=key)

    assert "invoice NF-1 was already recorded with different content" in _refused(response, 409)
    assert _written() == before


@pytest.mark.django_db
def test_the_same_idempotency_key_with_other_content_answers_409(client, shop):
    store, key, order = shop
    assert _post(client, _url(order), _invoice("NF-1", value=1000, items=[{"id": "A", "price": 1000, "quantity": 1}]),
                 key=key, idempotency_key="erp-req-1").status_code == 202

    response = _post(client, _url(order), _invoice("NF-2", value=500, items=[{"id": "B", "price": 500,
                                                                              "quantity": 1}]),
                     key=key, idempotency_key="erp-req-1")

    assert "Idempotency-Key erp-req-1 was already recorded with different content" in _refused(response, 409)
    assert ErpRequest.objects.count() == 1


@pytest.mark.django_db
def test_a_repeat_is_answered_after_the_order_changed_because_of_it(client, shop):
    """A retried invoice that filled the order must not be refused as exceeding it: it is the same request."""
    store, key, order = shop
    body = _invoice(value=2500, items=[{"id": "A", "price": 1000, "quantity": 2}, {"id": "B", "price": 500,
                                                                                   "quantity": 1}])
    first = _post(client, _url(order), body, key=key)
    ErpRequest.objects.update(state=ErpRequest.State.SENT, receipt="38e0e47da2934847b489216d208cfd91")

    again = _post(client, _url(order), body, key=key)

    assert again.status_code == 202
    assert again.json() == {"id": first.json()["id"], "state": "sent", "kind": "invoice"}


def _at_once(*requests: tuple[str, dict[str, Any]], key: str) -> list:
    """Post the requests from as many threads at the same moment (each thread has its own connection)."""
    start = threading.Barrier(len(requests))

    def post(url: str, body: dict[str, Any]) -> Any:
        try:
            start.wait()
            return _post(Client(), url, body, key=key)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda request: post(*request), requests))


@pytest.mark.django_db(transaction=True)
def test_two_invoices_at_once_cannot_both_fit_in_what_is_left(vtex):
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite serialises writers its own way)")
    store, key = _store()
    order = _order(vtex, store, [{"id": "A", "price": 1000, "quantity": 2}, {"id": "B", "price": 500, "quantity": 1}])

    answers = _at_once(*[(_url(order), _invoice(f"NF-{n}", value=2000)) for n in (1, 2)], key=key)

    assert sorted(answer.status_code for answer in answers) == [202, 400]
    assert ErpRequest.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_same_invoice_at_once_is_recorded_once(vtex):
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite serialises writers its own way)")
    store, key = _store()
    order = _order(vtex, store, [{"id": "A", "price": 1000, "quantity": 2}])

    answers = _at_once(*[(_url(order), _invoice("NF-1", value=2000))] * 3, key=key)

    assert [answer.status_code for answer in answers] == [202] * 3
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert ErpRequest.objects.count() == 1


# --- the key -----------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_new_key_works_at_once_and_the_old_one_stops(client, shop):
    store, old, order = shop

    new = erp_api_key_rotate(store)

    assert new != old and new.startswith("hubk_") and len(new) >= 48
    _refused(_post(client, _url(order, "cancel"), {"reason": "x"}, key=old), 401)
    assert _post(client, _url(order, "cancel"), {"reason": "x"}, key=new).status_code == 202


@pytest.mark.django_db
def test_the_key_is_stored_as_its_hash_only(shop):
    store, key, order = shop
    store.refresh_from_db()

    assert store.erp_api_key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert store.erp_api_key_hint == key[:8]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM feeds_store WHERE id = %s", [store.pk])
        row = " ".join(str(value) for value in cursor.fetchone())
    assert key not in row and key[8:20] not in row


@pytest.mark.django_db
def test_connect_store_rotates_the_key_and_prints_it_once(client, shop, caplog):
    store, old, order = shop
    out = io.StringIO()

    with caplog.at_level(logging.DEBUG):
        call_command("connect_store", "shop", "--rotate-erp-api-key", stdout=out)

    lines = out.getvalue().splitlines()
    [key] = [line for line in lines if line.startswith("hubk_")]
    assert out.getvalue().count(key) == 1
    assert any("will not be shown again" in line for line in lines)
    assert key not in caplog.text and key[8:] not in caplog.text
    _refused(_post(client, _url(order, "cancel"), {"reason": "x"}, key=old), 401)
    assert _post(client, _url(order, "cancel"), {"reason": "x"}, key=key).status_code == 202


@pytest.mark.django_db
def test_connect_store_refuses_to_rotate_the_key_of_an_unknown_store():
    with pytest.raises(CommandError, match="no store named 'ghost'"):
        call_command("connect_store", "ghost", "--rotate-erp-api-key", stdout=io.StringIO())


@pytest.mark.django_db
def test_connect_store_without_the_option_prints_no_key(shop):
    store, key, order = shop
    out = io.StringIO()

    call_command("connect_store", "shop", "--no-check", stdout=out)

    assert "hubk_" not in out.getvalue()
    store.refresh_from_db()
    assert store.erp_api_key_hash == hashlib.sha256(key.encode()).hexdigest()


# --- the admin's *Rotate the ERP API key* -----------------------------------------------------------------

def _rotate_url(store: Store) -> str:
    return f"/admin/core/store/{store.pk}/erp-api-key/"


def _staff_client(group: str) -> Client:
    """A logged-in member of one of the groups the migrations make (Viewer, Operator, Administrator)."""
    if not Group.objects.filter(name=group).exists():
        staff_groups_recreate()
    user = User.objects.create_user(f"{group.lower()}-1", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_an_administrator_rotates_the_key_from_the_store_page_and_sees_it_once(vtex):
    admin_client_hub = _staff_client("Administrator")
    store, old = _store()
    order = _order(vtex, store, [{"id": "A", "price": 1000, "quantity": 1}])
    page = admin_client_hub.get(f"/admin/core/store/{store.pk}/change/")
    assert page.status_code == 200
    assert _rotate_url(store) in page.content.decode()
    assert f"{old[:8]}…" in page.content.decode() and store.erp_api_key_hash not in page.content.decode()

    confirm = admin_client_hub.get(_rotate_url(store))
    assert confirm.status_code == 200 and b"Yes, make a new key" in confirm.content
    assert Store.objects.get().erp_api_key_hash == hashlib.sha256(old.encode()).hexdigest()  # a GET changes nothing

    done = admin_client_hub.post(_rotate_url(store))

    assert done.status_code == 200
    assert "no-store" in done["Cache-Control"]
    html = done.content.decode()
    store.refresh_from_db()
    [new] = [word.split('"')[0] for word in html.split('value="')[1:] if word.startswith("hubk_")]
    assert store.erp_api_key_hash == hashlib.sha256(new.encode()).hexdigest()
    assert "will not be shown again" in html and "Copy it now" in html
    assert LogEntry.objects.get().get_change_message() == "Rotated the ERP API key."
    client = Client()
    _refused(_post(client, _url(order, "cancel"), {"reason": "x"}, key=old), 401)
    assert _post(client, _url(order, "cancel"), {"reason": "x"}, key=new).status_code == 202
    # Back on the store page: the new key's first characters, never the key or its hash.
    page = admin_client_hub.get(f"/admin/core/store/{store.pk}/change/").content.decode()
    assert new[:8] in page and new not in page and store.erp_api_key_hash not in page


@pytest.mark.django_db
def test_a_store_without_a_key_says_so():
    admin_client_hub = _staff_client("Administrator")
    store = store_connect(name="nokey", account="nokey", app_key="k", app_token="t",
                          base_url="http://127.0.0.1:9", erp_url="http://127.0.0.1:9/erp").store

    page = admin_client_hub.get(f"/admin/core/store/{store.pk}/change/").content.decode()

    assert "no key yet" in page


@pytest.mark.django_db
@pytest.mark.parametrize("group", ["Viewer", "Operator"])
def test_viewers_and_operators_cannot_rotate_the_key(group):
    client = _staff_client(group)
    store, key = _store()

    page = client.get(f"/admin/core/store/{store.pk}/change/")
    confirm = client.get(_rotate_url(store))
    rotate = client.post(_rotate_url(store))

    assert page.status_code == 200 and _rotate_url(store) not in page.content.decode()
    assert f"{key[:8]}…" in page.content.decode()  # the hint is not a secret; the key and its hash are
    assert store.erp_api_key_hash not in page.content.decode() and key not in page.content.decode()
    assert (confirm.status_code, rotate.status_code) == (403, 403)
    store.refresh_from_db()
    assert store.erp_api_key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert LogEntry.objects.count() == 0
