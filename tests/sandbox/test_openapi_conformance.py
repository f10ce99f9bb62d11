"""VTEX's own OpenAPI file, run against the sandbox with schemathesis, for the operations the sandbox implements.

`orders-api.openapi.json` is a verbatim copy of `VTEX - Orders API.json` from vtex/openapi-schemas @ 0d207e53
(see ../shared/vtex/ORDERS-API.md §10). The spec is loose where VTEX's guides are precise (a `maxlot` typed as a
Postman placeholder, any string as a filter type) and silent about answers VTEX documents elsewhere, so
`spec_as_the_guides_tell_it()` narrows what is *generated* to what the guides call valid, each change with its
reason. The checks stay whole, except the few named in EXCLUDED_CHECKS, where the spec itself is wrong.
Deterministic (derandomized Hypothesis) and bounded: 25 examples per operation, well under a minute.
Invoice, tracking and tracking events run against orders of their own (SKU "123", as in VTEX's example invoice),
already in handling and invoiced once, because these operations document no answer but 200.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, ignored_auth, response_headers_conformance, response_schema_conformance,
    status_code_conformance,
)

from sandbox.server import Sandbox

SPEC = Path(__file__).with_name("orders-api.openapi.json")
OPERATIONS = [
    "Getfeedorderstatus1", "Commititemfeedorderstatus",  # feed read / commit
    "GetFeedConfiguration", "FeedConfiguration", "FeedConfigurationDelete",
    "GetHookConfiguration", "HookConfiguration", "DeleteHookConfiguration",
    "GetOrder", "StartHandling", "CancelOrder", "ListOrders",
    "InvoiceNotification", "Updatepartialinvoice.SendTrackingNumber", "UpdateTrackingStatus",
]
KNOWN_ORDERS = [f"10000000000{n:02d}-01" for n in range(1, 7)]
UNKNOWN_ORDER = "1999999999999-01"
# Handling orders with room for every generated invoice: 1,000 units of SKU 123 at 1,000.00, each invoiced
# once (NF-1, with a tracking number) before the run; and one order invoiced in full, then partly returned.
INVOICE_ORDERS = [f"10000000001{n:02d}-01" for n in range(1, 4)]
RETURNED_ORDER = "1000000000201-01"
SKU = "123"
FIRST_INVOICE = {"type": "Output", "issuanceDate": "2024-01-31T18:25:43-05:00", "invoiceNumber": "NF-1",
                 "invoiceValue": "100000", "courier": "carrierOne", "trackingNumber": "TRK-1",
                 "items": [{"id": SKU, "price": 100000, "quantity": 1}]}
ISSUANCE_DATES = ["2024-01-31T18:25:43-05:00", "2024-02-09T10:10:20.5322681+00:00", "2026-11-28T14:03:07Z"]
DISPATCHED_DATES = [None, "2019-02-08T13:16:13.4617653+00:00"]
HOOK_URL = "http://hook.invalid/replaced-by-the-test"  # the receiver's port is only known at run time
# The guide's documented JSONata examples (ORDERS-API.md §1.3): any string is no expression.
EXPRESSIONS = ['status = "ready-for-handling"', "finished = true", "value > 100",
               '(status = "ready-for-handling" and salesChannel="2")',
               "$count(changesAttachment.changesData.itemsAdded) > 0"]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, ignored_auth]
EXCLUDED_CHECKS = {
    # The spec documents VTEX's hook *notification* payload as this call's 200 answer (ORDERS-API.md §2.4,
    # "Oddity"); VTEX's guide shows no body. The status code is still checked.
    "POST /api/orders/hook/config": [content_type_conformance, response_schema_conformance],
}
DEFAULT_FEED = {"filter": {"type": "FromWorkflow", "status": ["ready-for-handling", "handling"]},
                "queue": {"visibilityTimeoutInSeconds": 250, "MessageRetentionPeriodInSeconds": 345600}}


def _parameter(operation: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in operation["parameters"] if p["name"] == name)


def _filter_schema(*, status_required: bool) -> dict[str, Any]:
    """The two filter shapes of the feed guide; mixing their fields is a documented 409."""
    workflow: dict[str, Any] = {
        "type": "object", "additionalProperties": False,
        "required": ["type", "status"] if status_required else ["type"],
        # An empty list can never match and VTEX's answer to it is undocumented: the sandbox refuses it.
        "properties": {"type": {"enum": ["FromWorkflow"]},
                       "status": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
    }
    orders = {
        "type": "object", "additionalProperties": False, "required": ["type", "expression", "disableSingleFire"],
        "properties": {"type": {"enum": ["FromOrders"]}, "expression": {"enum": EXPRESSIONS},
                       "disableSingleFire": {"type": "boolean"}},
    }
    return {"oneOf": [workflow, orders]}


def _narrow_post_sale(spec: dict[str, Any]) -> None:
    """Invoice, tracking and tracking events document only their 200: every generated call must be one VTEX accepts."""
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    invoice = paths["/api/oms/pvt/orders/{orderId}/invoice"]["post"]
    tracking = paths["/api/oms/pvt/orders/{orderId}/invoice/{invoiceNumber}"]["patch"]
    events = paths["/api/oms/pvt/orders/{orderId}/invoice/{invoiceNumber}/tracking"]["put"]
    for operation in (invoice, tracking, events):
        _parameter(operation, "orderId").update(schema={"enum": INVOICE_ORDERS}, example=None)
    for operation in (tracking, events):  # the invoice each order got before the run, not the spec's example
        _parameter(operation, "invoiceNumber").update(schema={"enum": ["NF-1"]}, example=None)
    for operation in (invoice, tracking, events):  # required fields, yet the body itself is left optional
        operation["requestBody"]["required"] = True

    body = invoice["requestBody"]["content"]["application/json"]["schema"]["properties"]
    # An `Input` (return) invoice needs the whole order invoiced first (its description): test_sandbox_invoice.py.
    body["type"] = {"enum": ["Output"]}
    # "You must add date and time in this field": real timestamps, not any string.
    body["issuanceDate"] = {"enum": ISSUANCE_DATES}
    body["dispatchedDate"] = {"enum": DISPATCHED_DATES}
    # Typed nullable, yet it names the invoice (the PATCH's path): a short non-empty number.
    body["invoiceNumber"] = {"type": "string", "pattern": "^[A-Z0-9-]{1,12}$"}
    # Cents as a string, greater than 0; small, so the orders never run out of value to invoice.
    body["invoiceValue"] = {"type": "string", "pattern": "^[1-9][0-9]{0,3}$"}
    # SKUs of the order, in quantities it has.
    body["items"].update(minItems=1, maxItems=3)
    body["items"]["items"]["properties"].update(id={"enum": [SKU]}, price={"type": "integer", "minimum": 0},
                                                quantity={"type": "integer", "minimum": 1, "maximum": 5})

    sent = schemas["Updatepartialinvoice.SendTrackingNumber.Request"]["properties"]
    # Sending the tracking number is the call's purpose: not an empty one.
    sent["trackingNumber"] = {"type": "string", "pattern": "^[A-Z0-9-]{1,12}$"}
    sent["dispatchedDate"] = {"enum": DISPATCHED_DATES}


def spec_as_the_guides_tell_it() -> dict[str, Any]:
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    paths = spec["paths"]

    # maxlot: typed as a string with the Postman placeholder "{{maxLot}}" as example; "Maximum accepted value
    # is 10", and VTEX's own C# consumer sends none (§1.5), so it is optional here.
    maxlot = _parameter(paths["/api/orders/feed"]["get"], "maxlot")
    maxlot.update(required=False, schema={"type": "string", "pattern": "^([1-9]|10)$"})

    # orderId: real orders of the sandbox. Get order documents no 404, start-handling and cancel do.
    order_ids = {"enum": [*KNOWN_ORDERS, *INVOICE_ORDERS, RETURNED_ORDER]}
    _parameter(paths["/api/oms/pvt/orders/{orderId}"]["get"], "orderId").update(schema=order_ids, example=None)
    for action in ("start-handling", "cancel"):
        _parameter(paths[f"/api/oms/pvt/orders/{{orderId}}/{action}"]["post"], "orderId").update(
            schema={"enum": [*KNOWN_ORDERS, UNKNOWN_ORDER]}, example=None)

    _narrow_post_sale(spec)

    # List orders: the limits its description states (page <= 30, 1 <= per_page <= 100), and the filters the sandbox
    # implements in the syntax the spec documents (their schemas say "any string"); the others it ignores.
    listing = paths["/api/oms/pvt/orders"]["get"]
    _parameter(listing, "page").update(schema={"type": "integer", "minimum": 1, "maximum": 30})
    _parameter(listing, "per_page").update(schema={"type": "integer", "minimum": 1, "maximum": 100})
    _parameter(listing, "f_status").update(schema={"enum": ["ready-for-handling", "handling", "canceled",
                                                            "ready-for-handling,handling"]})
    _parameter(listing, "f_creationDate").update(schema={"enum": [
        "creationDate:[2022-01-01T02:00:00.000Z TO 2022-01-02T01:59:59.999Z]",
        "creationDate:[2020-01-01T00:00:00.000Z TO 2099-01-01T00:00:00.000Z]"]})
    _parameter(listing, "orderBy").update(schema={"enum": ["creationDate,asc", "creationDate,desc", "orderId,asc"]})
    # Its stats schema is the example frozen: one facet's Mean and StdDev typed as integers (they are averages).
    for name in ("Mean", "StdDev"):
        spec["components"]["schemas"]["Fulfillment1"]["properties"][name]["type"] = "number"

    # Bodies: OpenAPI makes a requestBody optional unless it says `required: true`, which the spec forgets for
    # these three although their schemas have required fields; a config or commit without one means nothing.
    for path in ("/api/orders/feed/config", "/api/orders/feed", "/api/orders/hook/config"):
        paths[path]["post"]["requestBody"]["required"] = True

    # Get order: VTEX's own example (and .NET decimals) send `unitMultiplier: 1.0` and dimensions like `10.0`,
    # which its schema types as integers; the sandbox serves that example's values.
    order = paths["/api/oms/pvt/orders/{orderId}"]["get"]["responses"]["200"]["content"]["application/json"]
    item = order["schema"]["properties"]["items"]["items"]["properties"]
    item["unitMultiplier"]["type"] = "number"
    for name in ("height", "length", "weight", "width"):
        item["additionalInfo"]["properties"]["dimension"]["properties"][name]["type"] = "number"

    # Feed configuration: the guide's queue limits (§1.3) instead of any integer.
    feed_body = paths["/api/orders/feed/config"]["post"]["requestBody"]["content"]["application/json"]
    feed_body["schema"] = {
        "type": "object", "additionalProperties": False, "required": ["filter", "queue"],
        "properties": {"filter": _filter_schema(status_required=False), "queue": {
            "type": "object", "additionalProperties": False,
            "required": ["visibilityTimeoutInSeconds", "MessageRetentionPeriodInSeconds"],
            "properties": {"visibilityTimeoutInSeconds": {"type": "integer", "minimum": 0, "maximum": 43200},
                           "MessageRetentionPeriodInSeconds": {"type": "integer", "minimum": 345600,
                                                               "maximum": 1209600}}}},
    }

    # Hook configuration: VTEX pings the URL and refuses the save unless it answers 200 (guide, §2.3), so it
    # is our receiver. `Headers` requires a property named "key" (the spec's own example leaking into the
    # schema); the headers are credentials sent on every call, so: a few credential headers, values HTTP accepts
    # (OpenAPI 3.0 has no `propertyNames` to say "any valid header name").
    hook_body = paths["/api/orders/hook/config"]["post"]["requestBody"]["content"]["application/json"]
    hook_body["schema"] = {
        "type": "object", "additionalProperties": False, "required": ["filter", "hook"],
        "properties": {"filter": _filter_schema(status_required=True), "hook": {
            "type": "object", "additionalProperties": False, "required": ["url", "headers"],
            "properties": {"url": {"enum": [HOOK_URL]}, "headers": {
                "type": "object", "additionalProperties": False,
                "properties": {name: {"type": "string", "pattern": "^[A-Za-z0-9._~+/=-]{0,40}$"}
                               for name in ("X-Hub-Hook-Token", "Authorization", "key")}}}}},
    }
    hook_body["example"] = copy.deepcopy(hook_body["example"])
    hook_body["example"]["hook"]["url"] = HOOK_URL
    return spec


def _load() -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_dict(spec_as_the_guides_tell_it()).include(operation_id=OPERATIONS)
    schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE], max_examples=25,
                                    deterministic=True, with_security_parameters=False)
    schema.config.phases.update(phases=["examples", "fuzzing"])
    return schema


schema = _load()


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class Conformance:
    """The sandbox under test and a hook endpoint that answers every ping and notification with 200."""

    def __init__(self) -> None:
        self.receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
        self.receiver.daemon_threads = True
        threading.Thread(target=self.receiver.serve_forever, daemon=True).start()
        self.hook_url = f"http://127.0.0.1:{self.receiver.server_port}/hooks/vtex/sandbox/"
        self.sandbox = Sandbox(seed=20).start()
        for order_id in KNOWN_ORDERS:
            self.sandbox.create_order(order_id=order_id)
        self.auth = {"X-VTEX-API-AppKey": self.sandbox.app_key, "X-VTEX-API-AppToken": self.sandbox.app_token}
        for order_id in INVOICE_ORDERS:
            self.sandbox.create_order(order_id=order_id, status="handling",
                                      items=[{"id": SKU, "price": 100000, "quantity": 1000}])
            self._post(f"/api/oms/pvt/orders/{order_id}/invoice", FIRST_INVOICE)
        self._invoice_and_return(RETURNED_ORDER)

    def _post(self, path: str, body: dict[str, Any], method: str = "POST") -> None:
        response = requests.request(method, self.sandbox.url + path, json=body, headers=self.auth, timeout=5)
        assert response.status_code == 200, response.text

    def _invoice_and_return(self, order_id: str) -> None:
        """An invoiced order with a delivered package and a return: every part of a package Get order can show."""
        items = [{"id": SKU, "price": 2499, "quantity": 2}]
        self.sandbox.create_order(order_id=order_id, status="handling", items=items)
        path = f"/api/oms/pvt/orders/{order_id}/invoice"
        self._post(path, FIRST_INVOICE | {"invoiceValue": "4998", "items": items, "embeddedInvoice": "<NFe/>"})
        self._post(path + "/NF-1/tracking", {"isDelivered": True, "deliveredDate": "2024-02-15 10:17", "events": [
            {"city": "Rio de Janeiro", "state": "RJ", "description": "Delivered", "date": "2024-02-15"}]}, "PUT")
        self._post(path, FIRST_INVOICE | {"type": "Input", "invoiceNumber": "RET-1", "invoiceValue": "2499",
                                          "items": [{"id": SKU, "price": 2499, "quantity": 1,
                                                     "description": "The size was too big."}]})

    def restore_configs(self) -> None:
        """Every case starts with both configurations present: a DELETE case must not turn later GETs into 404s."""
        if self.sandbox.feed_config is None:
            self.sandbox.feed_config = DEFAULT_FEED
        if self.sandbox.hook_config is None:
            self.sandbox.hook_config = {"filter": {"type": "FromWorkflow", "status": ["handling"]},
                                        "hook": {"url": self.hook_url, "headers": {"X-Hub-Hook-Token": "t"}}}

    def close(self) -> None:
        self.sandbox.stop()
        self.receiver.shutdown()
        self.receiver.server_close()


@pytest.fixture(scope="module")
def conformance() -> Iterator[Conformance]:
    running = Conformance()
    yield running
    running.close()


@schema.parametrize()
@hypothesis.settings(deadline=None, derandomize=True, max_examples=25, database=None)
def test_the_sandbox_answers_as_vtexs_spec_says(case: schemathesis.Case, conformance: Conformance) -> None:
    conformance.restore_configs()
    if isinstance(case.body, dict) and case.body.get("hook", {}).get("url") == HOOK_URL:
        case.body["hook"]["url"] = conformance.hook_url
    excluded = EXCLUDED_CHECKS.get(case.operation.label, [])

    case.call_and_validate(headers=conformance.auth, base_url=conformance.sandbox.url,
                           checks=[check for check in CHECKS if check not in excluded])


IMPLEMENTED_PATHS = ["/api/oms/pvt/orders", "/api/orders/feed", "/api/orders/feed/config", "/api/orders/hook/config",
                     "/api/oms/pvt/orders/{orderId}", "/api/oms/pvt/orders/{orderId}/start-handling",
                     "/api/oms/pvt/orders/{orderId}/cancel", "/api/oms/pvt/orders/{orderId}/invoice",
                     "/api/oms/pvt/orders/{orderId}/invoice/{invoiceNumber}",
                     "/api/oms/pvt/orders/{orderId}/invoice/{invoiceNumber}/tracking"]
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"}


@pytest.mark.parametrize("path", IMPLEMENTED_PATHS)
def test_methods_the_spec_does_not_list_get_405_with_the_ones_it_does(conformance: Conformance, path: str) -> None:
    documented = {method.upper() for method in json.loads(SPEC.read_text(encoding="utf-8"))["paths"][path]
                  if method.upper() in HTTP_METHODS}
    url = conformance.sandbox.url + path.replace("{orderId}", INVOICE_ORDERS[0]).replace("{invoiceNumber}", "NF-1")

    for method in sorted(HTTP_METHODS - documented):
        response = requests.request(method, url, headers=conformance.auth, timeout=5)

        assert response.status_code == 405, method
        assert set(response.headers["Allow"].split(", ")) == documented
        if method != "HEAD":
            assert response.json()["error"]["code"] == "405"
