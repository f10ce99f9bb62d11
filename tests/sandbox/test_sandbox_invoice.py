"""Invoice, tracking and cancel on the sandbox over real HTTP, as VTEX documents them (ORDERS-API.md §4).

Where VTEX is silent the sandbox is strict; sandbox/invoices.py lists those choices. No Django here.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.server import Sandbox
from tests.sandbox.test_sandbox_hook import Receiver
from tests.sandbox.vtex_client import Vtex, fixture

SPEC = Path(__file__).with_name("orders-api.openapi.json")
RECEIPT = re.compile(r"^[0-9a-f]{32}$")
# Two SKUs, no freight: value 2 x 1,000 + 1 x 500 = 2,500 cents.
ITEMS = [{"id": "52", "price": 1000, "quantity": 2}, {"id": "96", "price": 500, "quantity": 1}]
ALL_STATUSES = {"filter": {"type": "FromWorkflow"},
                "queue": {"visibilityTimeoutInSeconds": 250, "MessageRetentionPeriodInSeconds": 345600}}


def invoice(number: str, value: int, items: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    body = {"type": "Output", "issuanceDate": "2026-11-28T14:03:07-03:00", "invoiceNumber": number,
            "invoiceValue": str(value), "items": items if items is not None else [ITEMS[0] | {"quantity": 1}]}
    return body | fields


def post_invoice(vtex: Vtex, order_id: str, body: Any, **kwargs: Any) -> requests.Response:
    return vtex.request("POST", f"/api/oms/pvt/orders/{order_id}/invoice", json=body, **kwargs)


def tracking(vtex: Vtex, order_id: str, number: str, body: Any, **kwargs: Any) -> requests.Response:
    return vtex.request("PATCH", f"/api/oms/pvt/orders/{order_id}/invoice/{number}", json=body, **kwargs)


def tracking_events(vtex: Vtex, order_id: str, number: str, body: Any, **kwargs: Any) -> requests.Response:
    return vtex.request("PUT", f"/api/oms/pvt/orders/{order_id}/invoice/{number}/tracking", json=body, **kwargs)


def cancel(vtex: Vtex, order_id: str, body: Any = None, **kwargs: Any) -> requests.Response:
    return vtex.request("POST", f"/api/oms/pvt/orders/{order_id}/cancel",
                        json={"reason": "Out of stock"} if body is None else body, **kwargs)


def handling_order(sandbox: Sandbox, vtex: Vtex, items: list[dict[str, Any]] | None = None) -> str:
    """A new order moved to handling the way the hub does it, with its feed events committed."""
    order_id = sandbox.create_order(items=items or ITEMS)
    assert vtex.start_handling(order_id).status_code == 204
    vtex.commit([item["handle"] for item in vtex.read()])
    return order_id


def states(vtex: Vtex) -> list[tuple[str, str]]:
    return [(item["state"], item["lastState"]) for item in vtex.read()]


def assert_receipt(response: requests.Response, order_id: str) -> None:
    body = response.json()
    assert response.status_code == 200, response.text
    assert body.keys() == fixture("invoice-notification-response.json").keys()
    assert body["orderId"] == order_id and RECEIPT.match(body["receipt"])


TRACKING = {"trackingNumber": "TRK-48960684", "trackingUrl": "https://tracking.example.com/TRK-48960684",
            "courier": "Fast Delivery", "dispatchedDate": "2026-11-29T09:00:00.0000000+00:00"}
EVENTS = {"isDelivered": True, "deliveredDate": "2026-12-01 15:20", "events": [
    {"city": "Rio de Janeiro", "state": "RJ", "description": "Collected by the carrier", "date": "2026-11-29"},
    {"city": "Sao Paulo", "state": "SP", "description": "Delivered", "date": "2026-12-01"}]}


# ---- invoices ---------------------------------------------------------------------------------------------


def test_partial_invoices_keep_the_order_in_handling_until_they_reach_its_value(sandbox: Sandbox,
                                                                                vtex: Vtex) -> None:
    sandbox.feed_config = ALL_STATUSES
    order_id = handling_order(sandbox, vtex)

    first = post_invoice(vtex, order_id, invoice("NF-1", 1000))

    assert_receipt(first, order_id)
    summary = sandbox.order_summary(order_id)
    assert (summary["status"], summary["invoicedValue"], summary["allowCancellation"]) == ("handling", 1000, False)
    assert states(vtex) == []  # a partial invoice changes no status: VTEX keeps it in "Handling shipping"

    second = post_invoice(vtex, order_id, invoice("NF-2", 1500, [ITEMS[0] | {"quantity": 1}, ITEMS[1]]))

    assert_receipt(second, order_id)
    document = sandbox.order(order_id)
    assert document["status"] == "invoiced" and document["invoicedDate"]
    assert [p["invoiceNumber"] for p in document["packageAttachment"]["packages"]] == ["NF-1", "NF-2"]
    events = vtex.read()
    assert [(e["state"], e["lastState"]) for e in events] == [("invoice", "handling"), ("invoiced", "invoice")]
    assert events[1]["lastChange"] == events[0]["currentChange"] < events[1]["currentChange"]


def test_an_invoice_is_stored_as_a_package_of_the_order_document(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = handling_order(sandbox, vtex)

    post_invoice(vtex, order_id, invoice("NF-1", 1500, [ITEMS[1] | {"description": "mug"}, ITEMS[0] | {"quantity": 1}],
                                         invoiceKey="CFe352011", invoiceUrl="https://erp.example.com/NF-1.pdf",
                                         courier="Fast Delivery", embeddedInvoice=None))

    [package] = Vtex(sandbox).request("GET", f"/api/oms/pvt/orders/{order_id}").json()["packageAttachment"]["packages"]
    assert package["items"] == [
        {"itemIndex": 1, "quantity": 1, "price": 500, "description": "mug", "unitMultiplier": 1.0},
        {"itemIndex": 0, "quantity": 1, "price": 1000, "description": None, "unitMultiplier": 1.0}]
    assert (package["type"], package["invoiceNumber"], package["invoiceValue"]) == ("Output", "NF-1", 1500)
    assert (package["invoiceKey"], package["courier"], package["trackingNumber"]) == ("CFe352011", "Fast Delivery",
                                                                                     None)
    assert package["issuanceDate"] == "2026-11-28T14:03:07-03:00"
    assert "embeddedInvoice" not in package  # a non-nullable string in Get order's schema: left out when null


def test_an_invoice_over_what_is_left_of_the_order_is_refused_with_400(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = handling_order(sandbox, vtex)
    post_invoice(vtex, order_id, invoice("NF-1", 2000))

    over = post_invoice(vtex, order_id, invoice("NF-2", 501))

    assert over.status_code == 400
    assert over.json()["error"]["message"] == "invoiceValue 501 exceeds what is left to invoice on the order (500)"
    assert sandbox.order_summary(order_id)["invoicedValue"] == 2000
    assert post_invoice(vtex, order_id, invoice("NF-2", 500, [ITEMS[1]])).status_code == 200
    # Invoiced in full: nothing is left, so any further invoice exceeds the order too.
    assert post_invoice(vtex, order_id, invoice("NF-3", 1)).status_code == 400
    assert sandbox.order(order_id)["status"] == "invoiced"


def test_a_repeated_invoice_number_gets_a_new_receipt_and_changes_nothing_else(sandbox: Sandbox,
                                                                               vtex: Vtex) -> None:
    order_id = handling_order(sandbox, vtex)
    first = post_invoice(vtex, order_id, invoice("NF-1", 1000))
    package = sandbox.order_summary(order_id)["packages"]

    again = post_invoice(vtex, order_id, invoice("NF-1", 2500, courier="Someone else"))

    assert_receipt(again, order_id)
    assert again.json()["receipt"] != first.json()["receipt"]
    summary = sandbox.order_summary(order_id)
    assert summary["packages"] == package and summary["status"] == "handling"
    assert summary["invoiceReceipts"] == {"NF-1": [first.json()["receipt"], again.json()["receipt"]]}


@pytest.mark.parametrize("status", ["ready-for-handling", "window-to-cancel", "payment-approved", "canceled"])
def test_an_invoice_before_handling_or_after_cancel_is_refused_with_409(sandbox: Sandbox, vtex: Vtex,
                                                                         status: str) -> None:
    order_id = sandbox.create_order(status=status, items=ITEMS)

    response = post_invoice(vtex, order_id, invoice("NF-1", 2500, ITEMS))

    assert response.status_code == 409
    assert response.json()["error"]["message"].endswith(f"to receive an invoice, not {status}")
    assert sandbox.order_summary(order_id)["packages"] == []


def test_a_return_invoice_needs_the_whole_order_invoiced_and_refunds_at_most_that(sandbox: Sandbox,
                                                                                  vtex: Vtex) -> None:
    order_id = handling_order(sandbox, vtex)
    ret = invoice("RET-1", 500, [ITEMS[1] | {"description": "Broken"}], type="Input")

    assert post_invoice(vtex, order_id, ret).status_code == 409
    post_invoice(vtex, order_id, invoice("NF-1", 2500, ITEMS))
    assert post_invoice(vtex, order_id, ret | {"invoiceValue": "2501"}).status_code == 400
    assert_receipt(post_invoice(vtex, order_id, ret), order_id)

    summary = sandbox.order_summary(order_id)
    assert (summary["status"], summary["invoicedValue"], summary["returnedValue"]) == ("invoiced", 2500, 500)
    refund = summary["packages"][1]["restitutions"]["Refund"]
    assert refund["value"] == 500
    assert refund["items"] == [{"useFreight": False, "isCompensation": False, "compensationValue": 0, "id": "96",
                                "quantity": 1, "price": 500, "description": "Broken"}]


@pytest.mark.parametrize("change, field", [
    ({"type": "Sale"}, "type"),
    ({"type": None}, "type"),
    ({"invoiceNumber": ""}, "invoiceNumber"),
    ({"invoiceNumber": None}, "invoiceNumber"),
    ({"invoiceValue": 1000}, "invoiceValue"),  # the spec's type is a string of cents
    ({"invoiceValue": "10.00"}, "invoiceValue"),
    ({"invoiceValue": "0"}, "invoiceValue"),
    ({"issuanceDate": "2026-11-28"}, "issuanceDate"),  # "you must add date and time"
    ({"issuanceDate": "yesterday at noon"}, "issuanceDate"),
    ({"dispatchedDate": "soon"}, "dispatchedDate"),
    ({"courier": None}, "courier"),
    ({"trackingUrl": 5}, "trackingUrl"),
    ({"items": []}, "items"),
    ({"items": [{"id": 52, "price": 1000, "quantity": 1}]}, "items[0].id"),
    ({"items": [{"id": "52", "price": 10.5, "quantity": 1}]}, "items[0].price"),
    ({"items": [{"id": "52", "price": 1000, "quantity": 0}]}, "items[0].quantity"),
    ({"items": [{"id": "77", "price": 1000, "quantity": 1}]}, "SKU 77 is not an item of order"),
    ({"items": [{"id": "52", "price": 1000, "quantity": 3}]}, "SKU 52: 3 invoiced as Output, but the order has 2"),
])
def test_a_bad_invoice_is_refused_with_400_naming_the_field_and_nothing_is_stored(
    sandbox: Sandbox, vtex: Vtex, change: dict[str, Any], field: str
) -> None:
    order_id = handling_order(sandbox, vtex)

    response = post_invoice(vtex, order_id, invoice("NF-1", 1000) | change)

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(field)
    assert sandbox.order_summary(order_id)["packages"] == []


@pytest.mark.parametrize("missing", ["type", "issuanceDate", "invoiceNumber", "invoiceValue", "items"])
def test_every_required_invoice_field_is_required(sandbox: Sandbox, vtex: Vtex, missing: str) -> None:
    order_id = handling_order(sandbox, vtex)
    body = invoice("NF-1", 1000)
    del body[missing]

    response = post_invoice(vtex, order_id, body)

    assert response.status_code == 400 and missing in response.json()["error"]["message"]


def test_an_invoice_that_is_not_json_or_for_an_unknown_order_is_refused(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = handling_order(sandbox, vtex)

    not_json = vtex.request("POST", f"/api/oms/pvt/orders/{order_id}/invoice", data="{nope",
                            headers={"Content-Type": "application/json"})
    unknown = post_invoice(vtex, "1999999999999-01", invoice("NF-1", 1000))

    assert (not_json.status_code, not_json.json()["error"]["message"]) == (400, "body must be JSON")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "OMS002")


def test_vtexs_example_invoices_are_accepted_as_they_are(sandbox: Sandbox, vtex: Vtex) -> None:
    # VTEX's example invoices 2 units of SKU 123 at 24.99 each, for 24.99 in all: a partial invoice here.
    order_id = handling_order(sandbox, vtex, items=[{"id": "123", "price": 2499, "quantity": 4}])
    example = fixture("invoice-notification-request.json")
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    spec_example = spec["paths"]["/api/oms/pvt/orders/{orderId}/invoice"]["post"]["requestBody"]["content"][
        "application/json"]["example"]  # the same, with an NF-e XML as `embeddedInvoice`

    assert_receipt(post_invoice(vtex, order_id, example), order_id)
    assert_receipt(post_invoice(vtex, order_id, spec_example | {"invoiceNumber": "DFG-v7731485plzv-02"}), order_id)

    first, second = sandbox.order_summary(order_id)["packages"]
    assert {key: first[key] for key in ("invoiceNumber", "invoiceValue", "invoiceKey", "courier", "trackingNumber",
                                        "trackingUrl", "dispatchedDate")} == {
        "invoiceNumber": "DFG-v7731485plzv-01", "invoiceValue": 2499, "invoiceKey": example["invoiceKey"],
        "courier": "carrierOne", "trackingNumber": "87658", "trackingUrl": "https://www.tracking.com/url",
        "dispatchedDate": "2019-02-08T13:16:13.4617653+00:00"}
    assert first["items"] == [{"itemIndex": 0, "quantity": 2, "price": 2499, "description": "335",
                               "unitMultiplier": 1.0}]
    assert second["embeddedInvoice"].startswith("<NFe>")
    # Each example says 24.99 for 2 units (VTEX does not check one against the other): 49.98 of 99.96 invoiced.
    assert (sandbox.order(order_id)["status"], sandbox.order_summary(order_id)["invoicedValue"]) == ("handling", 4998)


# ---- tracking ---------------------------------------------------------------------------------------------


def test_a_tracking_number_sent_later_shows_in_the_order_document(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = handling_order(sandbox, vtex)
    post_invoice(vtex, order_id, invoice("NF 1/A", 2500, ITEMS))

    response = tracking(vtex, order_id, "NF%201%2FA", TRACKING)  # the number is a path segment: URL-encoded

    assert_receipt(response, order_id)
    [package] = vtex.request("GET", f"/api/oms/pvt/orders/{order_id}").json()["packageAttachment"]["packages"]
    assert {key: package[key] for key in TRACKING} == TRACKING
    assert package["invoiceValue"] == 2500 and sandbox.order(order_id)["status"] == "invoiced"


@pytest.mark.parametrize("body, status, message", [
    ({k: v for k, v in TRACKING.items() if k != "courier"}, 400, "courier required"),
    (TRACKING | {"trackingNumber": ""}, 400, "trackingNumber must be a non-empty string"),
    (TRACKING | {"dispatchedDate": "tomorrow"}, 400, "dispatchedDate must be a date and time"),
    (["not", "an", "object"], 400, "body must be a JSON object"),
])
def test_a_bad_tracking_update_is_refused_and_changes_nothing(sandbox: Sandbox, vtex: Vtex, body: Any,
                                                              status: int, message: str) -> None:
    order_id = handling_order(sandbox, vtex)
    post_invoice(vtex, order_id, invoice("NF-1", 1000))

    response = tracking(vtex, order_id, "NF-1", body)

    assert response.status_code == status and response.json()["error"]["message"].startswith(message)
    assert sandbox.order_summary(order_id)["packages"][0]["trackingNumber"] is None


def test_tracking_of_an_unknown_invoice_or_order_is_404(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = handling_order(sandbox, vtex)
    post_invoice(vtex, order_id, invoice("NF-1", 1000))

    assert tracking(vtex, order_id, "NF-2", TRACKING).status_code == 404
    assert tracking_events(vtex, order_id, "NF-2", EVENTS).status_code == 404
    assert tracking(vtex, "1999999999999-01", "NF-1", TRACKING).json()["error"]["code"] == "OMS002"


def test_tracking_events_need_a_tracking_number_and_then_show_as_the_courier_status(sandbox: Sandbox,
                                                                                    vtex: Vtex) -> None:
    order_id = handling_order(sandbox, vtex)
    post_invoice(vtex, order_id, invoice("NF-1", 2500, ITEMS))

    assert tracking_events(vtex, order_id, "NF-1", EVENTS).status_code == 409
    tracking(vtex, order_id, "NF-1", TRACKING)
    assert_receipt(tracking_events(vtex, order_id, "NF-1", EVENTS), order_id)

    status = sandbox.order(order_id)["packageAttachment"]["packages"][0]["courierStatus"]
    assert (status["status"], status["finished"], status["deliveredDate"]) == ("ok", True, "2026-12-01 15:20")
    assert [(d["city"], d["description"], d["createDate"]) for d in status["data"]] == [
        ("Rio de Janeiro", "Collected by the carrier", "2026-11-29"), ("Sao Paulo", "Delivered", "2026-12-01")]
    assert sandbox.order(order_id)["status"] == "invoiced"  # delivery changes no status: invoiced is final
    assert tracking_events(vtex, order_id, "NF-1", EVENTS | {"events": [{"city": "X"}]}).status_code == 400


# ---- cancel -----------------------------------------------------------------------------------------------


def test_cancel_answers_a_receipt_and_goes_through_cancel_to_canceled_once(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = handling_order(sandbox, vtex)

    first = cancel(vtex, order_id, fixture("cancel-order-request.json"))  # VTEX's example, as it is
    again = cancel(vtex, order_id)

    assert_receipt(first, order_id)
    assert_receipt(again, order_id)  # already canceled: 200 again, and nothing else happens
    assert states(vtex) == [("cancel", "handling"), ("canceled", "cancel")]
    document = sandbox.order(order_id)
    assert (document["status"], document["cancelReason"]) == ("canceled", "Unexpected stock shortage")
    assert document["cancellationData"]["RequestedByUser"] is False
    assert sandbox.order_summary(order_id)["cancelReceipts"] == [first.json()["receipt"], again.json()["receipt"]]


@pytest.mark.parametrize("invoiced, status, message", [
    (1000, "handling", "Order cannot be canceled: it is partially invoiced"),
    (2500, "invoiced", "Order cannot be canceled: it is invoiced"),
])
def test_cancel_of_an_invoiced_or_partially_invoiced_order_is_refused_with_400(
    sandbox: Sandbox, vtex: Vtex, invoiced: int, status: str, message: str
) -> None:
    order_id = handling_order(sandbox, vtex)
    post_invoice(vtex, order_id, invoice("NF-1", invoiced, ITEMS))
    vtex.commit([item["handle"] for item in vtex.read()])

    response = cancel(vtex, order_id)

    assert response.status_code == 400
    assert response.json() == {"error": {"code": "OMS004", "message": message, "exception": None}}
    assert sandbox.order(order_id)["status"] == status and states(vtex) == []


@pytest.mark.parametrize("body, message", [
    ({"reason": 42}, "reason must be a string"),
    ({"reason": "x", "requestedByUser": "no"}, "requestedByUser must be true or false"),
    ([], "body must be a JSON object"),
])
def test_a_bad_cancel_body_is_refused_with_400(sandbox: Sandbox, vtex: Vtex, body: Any, message: str) -> None:
    order_id = handling_order(sandbox, vtex)

    response = cancel(vtex, order_id, body)

    assert (response.status_code, response.json()["error"]["message"]) == (400, message)
    assert sandbox.order(order_id)["status"] == "handling"


# ---- the feed and the hook see it -------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_feed_and_the_hook_see_invoiced_and_canceled(sandbox: Sandbox, vtex: Vtex, receiver: Receiver) -> None:
    sandbox.hook_config = {"filter": {"type": "FromWorkflow", "status": ["invoiced", "canceled"]},
                           "hook": {"url": receiver.url, "headers": {}}}
    invoiced, canceled = handling_order(sandbox, vtex), handling_order(sandbox, vtex)

    post_invoice(vtex, invoiced, invoice("NF-1", 2500, ITEMS))
    cancel(vtex, canceled)

    # The default feed filter (sandbox.feed.DEFAULT_STATUSES) has invoiced, cancel and canceled, not invoice.
    assert sorted((e["orderId"], e["state"], e["lastState"]) for e in vtex.read()) == sorted([
        (invoiced, "invoiced", "invoice"), (canceled, "cancel", "handling"), (canceled, "canceled", "cancel")])
    assert sandbox.wait_for_hooks(5)
    assert sorted((n.body["OrderId"], n.body["State"]) for n in receiver.notifications) == sorted([
        (invoiced, "invoiced"), (canceled, "canceled")])


# ---- faults -----------------------------------------------------------------------------------------------

ROUTE_CALLS = {
    "invoice": lambda vtex, order_id, **kw: post_invoice(vtex, order_id, invoice("NF-2", 500, [ITEMS[1]]), **kw),
    "tracking": lambda vtex, order_id, **kw: tracking(vtex, order_id, "NF-1", TRACKING, **kw),
    "tracking_status": lambda vtex, order_id, **kw: tracking_events(vtex, order_id, "NF-1", EVENTS, **kw),
    "cancel": lambda vtex, order_id, **kw: cancel(vtex, order_id, **kw),
}


def faulty_order(sandbox: Sandbox, vtex: Vtex, route: str) -> str:
    """An order each route accepts: partly invoiced (NF-1, with a tracking number), or for cancel a fresh one."""
    order_id = handling_order(sandbox, vtex)
    if route != "cancel":
        post_invoice(vtex, order_id, invoice("NF-1", 2000, trackingNumber="TRK-1"))
    return order_id


def fingerprint(sandbox: Sandbox, order_id: str) -> tuple[str, str]:
    """The order's status and invoices, without the times tracking events were received."""
    summary = sandbox.order_summary(order_id)
    return summary["status"], re.sub(r'"lastChange": "[^"]*"', "", json.dumps(summary["packages"]))


@pytest.mark.parametrize("route", sorted(ROUTE_CALLS))
@pytest.mark.parametrize("status", [500, 503, 429])
def test_scripted_failures_answer_as_told_and_change_nothing(sandbox: Sandbox, vtex: Vtex, route: str,
                                                             status: int) -> None:
    order_id = faulty_order(sandbox, vtex, route)
    before = fingerprint(sandbox, order_id)
    sandbox.retry_after_seconds = 7
    sandbox.fail_next(route, status)

    failed = ROUTE_CALLS[route](vtex, order_id)

    assert failed.status_code == status and failed.json()["error"]["code"] == str(status)
    assert failed.headers.get("Retry-After") == ("7" if status == 429 else None)
    assert fingerprint(sandbox, order_id) == before
    assert ROUTE_CALLS[route](vtex, order_id).status_code == 200


@pytest.mark.parametrize("route", sorted(ROUTE_CALLS))
def test_broken_json_answers_200_that_cannot_be_parsed_and_changes_nothing(sandbox: Sandbox, vtex: Vtex,
                                                                           route: str) -> None:
    order_id = faulty_order(sandbox, vtex, route)
    before = fingerprint(sandbox, order_id)
    sandbox.fail_next(route, "broken_json")

    response = ROUTE_CALLS[route](vtex, order_id)

    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert fingerprint(sandbox, order_id) == before


@pytest.mark.parametrize("route", sorted(ROUTE_CALLS))
def test_a_timeout_acts_before_the_client_gives_up_and_the_retry_is_harmless(sandbox: Sandbox, vtex: Vtex,
                                                                             route: str) -> None:
    order_id = faulty_order(sandbox, vtex, route)
    before = fingerprint(sandbox, order_id)
    sandbox.fail_next(route, "timeout", delay_seconds=0.6)

    with pytest.raises(requests.ReadTimeout):
        ROUTE_CALLS[route](vtex, order_id, timeout=0.2)
    acted = fingerprint(sandbox, order_id)
    retry = ROUTE_CALLS[route](vtex, order_id)

    assert acted != before  # VTEX did the work; only its answer was lost
    assert retry.status_code == 200 and fingerprint(sandbox, order_id) == acted


def test_random_fault_knobs_reach_the_post_sale_calls(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = faulty_order(sandbox, vtex, "invoice")
    before = fingerprint(sandbox, order_id)
    knobs = f"{sandbox.url}/_sandbox/faults"

    requests.post(knobs, json={"rate_limit_rate": 1.0, "retry_after_seconds": 3}, timeout=5)
    limited = [call(vtex, order_id) for call in ROUTE_CALLS.values()]
    requests.post(knobs, json={"rate_limit_rate": 0, "fault_rate": 1.0}, timeout=5)
    unavailable = [call(vtex, order_id) for call in ROUTE_CALLS.values()]
    requests.post(knobs, json={"fault_rate": 0, "broken_json_rate": 1.0}, timeout=5)
    broken = [call(vtex, order_id) for call in ROUTE_CALLS.values()]

    assert [(r.status_code, r.headers["Retry-After"]) for r in limited] == [(429, "3")] * 4
    assert [r.status_code for r in unavailable] == [503] * 4
    assert [r.status_code for r in broken] == [200] * 4 and all(r.text[-1:] != "}" for r in broken)
    assert fingerprint(sandbox, order_id) == before  # random faults are decided before acting


def test_the_latency_knob_delays_the_post_sale_calls_too() -> None:
    with Sandbox(seed=3, latency_ms=200) as sandbox:
        vtex = Vtex(sandbox)
        order_id = sandbox.create_order(status="handling", items=ITEMS)
        started = time.monotonic()

        assert post_invoice(vtex, order_id, invoice("NF-1", 2500, ITEMS)).status_code == 200
        assert time.monotonic() - started >= 0.2


def test_post_sale_calls_need_the_app_key_and_token(sandbox: Sandbox) -> None:
    order_id = sandbox.create_order(status="handling", items=ITEMS)

    response = requests.post(f"{sandbox.url}/api/oms/pvt/orders/{order_id}/invoice", json=invoice("NF-1", 100),
                             timeout=5)

    assert response.status_code == 401 and sandbox.order_summary(order_id)["packages"] == []


# ---- control API ------------------------------------------------------------------------------------------


def test_the_control_api_creates_orders_with_given_items_and_shows_invoices(sandbox: Sandbox, vtex: Vtex) -> None:
    base = f"{sandbox.url}/_sandbox/orders"
    [order_id] = requests.post(base, json={"count": 1, "status": "handling", "items": ITEMS}, timeout=5).json()[
        "orderIds"]
    sent = post_invoice(vtex, order_id, invoice("NF-1", 1000))

    summary = requests.get(f"{base}/{order_id}", timeout=5).json()

    assert summary | {"packages": None} == {
        "orderId": order_id, "status": "handling", "value": 2500, "invoicedValue": 1000, "returnedValue": 0,
        "allowCancellation": False, "cancelReason": None, "packages": None,
        "invoiceReceipts": {"NF-1": [sent.json()["receipt"]]}, "cancelReceipts": []}
    assert summary["packages"] == sandbox.order(order_id)["packageAttachment"]["packages"]
    assert requests.get(f"{base}/1999999999999-01", timeout=5).status_code == 404
    assert requests.post(base, json={"items": [{"id": "1", "price": -1, "quantity": 1}]}, timeout=5).status_code == 400
    assert requests.post(base, json={"items": ["x"]}, timeout=5).status_code == 400
