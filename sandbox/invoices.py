"""VTEX's invoice notification, tracking number and tracking events, kept as packages on the order document.

Parsing runs outside the sandbox lock and raises `PostSaleError`; `add_invoice`, `set_tracking` and
`set_courier_status` change an `OrderRecord` and run under it. What VTEX documents (ORDERS-API.md §4.3, the
spec's InvoiceNotification, Updatepartialinvoice.SendTrackingNumber and UpdateTrackingStatus) is followed; where
it is silent (UNCONFIRMED) the sandbox is strict, so a hub that passes here also passes on VTEX:

- an `Output` invoice is accepted only once handling started (`INVOICEABLE`), an `Input` (return) invoice only
  once the order is `invoiced`: other statuses (before handling, canceled) answer 409;
- invoices never exceed the order: `Output` ones sum to at most `value` (so a new one on an invoiced order is a
  400 too), `Input` ones to at most what was invoiced, and every item names a SKU of the order, in no more than
  its ordered quantity: else 400;
- a repeated `invoiceNumber` answers 200 with a new receipt and changes nothing else (the spec's own words),
  whatever the repeated body says;
- a partial invoice changes no status (VTEX keeps the order in "Handling shipping"), and the order's `value` is
  not lowered by it (VTEX's partial settlement is a gateway beta);
- tracking of an unknown invoice number is a 404; tracking events before a tracking number are a 409.
Documented strictness kept as documented: `invoiceValue` is a string of cents, `issuanceDate` has a time, and
`courier`, when sent, is a string (the spec makes it non-nullable).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sandbox.orders import OrderRecord

INVOICE_TYPES = ("Output", "Input")
# Statuses in which VTEX expects the invoice (ORDERS-API.md §5): after start-handling, before `invoiced`.
INVOICEABLE = frozenset({"start-handling", "handling", "ready-for-invoicing", "invoice"})
OPTIONAL_TEXT = ("invoiceKey", "invoiceUrl", "embeddedInvoice", "trackingNumber", "trackingUrl", "dispatchedDate")
TRACKING_FIELDS = ("trackingNumber", "trackingUrl", "courier", "dispatchedDate")
_CENTS = re.compile(r"[0-9]+")
_DATE_AND_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d")


class PostSaleError(Exception):
    """A refused invoice, tracking or cancel call: the HTTP status, code and message of VTEX's error body."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or str(status)  # VTEX documents no codes for these refusals: the status, as elsewhere


@dataclass(frozen=True)
class InvoiceItem:
    sku: str
    price: int  # unit price in cents; VTEX multiplies it by the quantity
    quantity: int
    description: str | None


@dataclass(frozen=True)
class Invoice:
    type: str
    number: str
    value: int
    issuance_date: str
    items: tuple[InvoiceItem, ...]
    courier: str | None
    texts: dict[str, str | None]  # OPTIONAL_TEXT fields, as sent


def _bad(message: str) -> PostSaleError:
    return PostSaleError(400, message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _date_time(payload: dict[str, Any], name: str, *, required: bool) -> str | None:
    """A date *and time* in ISO 8601, as VTEX asks for `issuanceDate`; empty or null only when optional."""
    value = payload.get(name)
    if not required and value in (None, ""):
        return value
    if isinstance(value, str) and _DATE_AND_TIME.match(value):
        try:
            datetime.fromisoformat(value)  # Python 3.11 reads "Z" too
            return value
        except ValueError:
            pass
    raise _bad(f"{name} must be a date and time in ISO 8601, like 2024-01-31T18:25:43-05:00")


def _optional_text(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad(f"{name} must be a string or null")
    return value


def _item(raw: Any, index: int) -> InvoiceItem:
    if not isinstance(raw, dict):
        raise _bad(f"items[{index}] must be an object")
    sku, price, quantity, description = raw.get("id"), raw.get("price"), raw.get("quantity"), raw.get("description")
    if not isinstance(sku, str) or not sku:
        raise _bad(f"items[{index}].id must be the SKU id, a string")
    if not _is_int(price) or price < 0:
        raise _bad(f"items[{index}].price must be the unit price in cents, an integer of at least 0")
    if not _is_int(quantity) or quantity < 1:
        raise _bad(f"items[{index}].quantity must be an integer of at least 1")
    if description is not None and not isinstance(description, str):
        raise _bad(f"items[{index}].description must be a string")
    return InvoiceItem(sku=sku, price=price, quantity=quantity, description=description)


def parse_invoice(payload: Any) -> Invoice:
    """The invoice notification body, checked field by field against the spec."""
    if not isinstance(payload, dict):
        raise _bad("body must be a JSON object")
    if payload.get("type") not in INVOICE_TYPES:
        raise _bad("type must be Output or Input")
    number = payload.get("invoiceNumber")
    if not isinstance(number, str) or not number.strip():
        raise _bad("invoiceNumber is required")
    value = payload.get("invoiceValue")
    # The spec types it as a string of cents ("2499"), greater than 0, without separators.
    if not isinstance(value, str) or not _CENTS.fullmatch(value) or int(value) <= 0:
        raise _bad('invoiceValue must be the amount in cents as a string greater than 0, like "2499"')
    items = payload.get("items")
    if not isinstance(items, list) or not items:
        raise _bad("items must list the invoiced SKUs")
    courier = payload.get("courier")
    if "courier" in payload and not isinstance(courier, str):  # the one optional field the spec makes non-nullable
        raise _bad("courier must be a string (leave it out when there is none)")
    texts = {name: _optional_text(payload, name) for name in OPTIONAL_TEXT}
    texts["dispatchedDate"] = _date_time(payload, "dispatchedDate", required=False)
    return Invoice(type=payload["type"], number=number, value=int(value),
                   issuance_date=_date_time(payload, "issuanceDate", required=True) or "",
                   items=tuple(_item(raw, index) for index, raw in enumerate(items)), courier=courier, texts=texts)


def parse_tracking(payload: Any) -> dict[str, str | None]:
    """Updatepartialinvoice.SendTrackingNumber: its four fields are required, only the tracking number non-null."""
    if not isinstance(payload, dict):
        raise _bad("body must be a JSON object")
    missing = [name for name in TRACKING_FIELDS if name not in payload]
    if missing:
        raise _bad(f"{', '.join(missing)} required")
    number = payload["trackingNumber"]
    # Sending the tracking number is this call's purpose: an empty one means nothing.
    if not isinstance(number, str) or not number.strip():
        raise _bad("trackingNumber must be a non-empty string")
    fields: dict[str, str | None] = {"trackingNumber": number}
    for name in ("trackingUrl", "courier"):
        fields[name] = _optional_text(payload, name)
    fields["dispatchedDate"] = _date_time(payload, "dispatchedDate", required=False)
    return fields


def parse_tracking_status(payload: Any) -> dict[str, Any]:
    """UpdateTrackingStatusRequest: `isDelivered`, `deliveredDate` (may be null) and the carrier's events."""
    if not isinstance(payload, dict):
        raise _bad("body must be a JSON object")
    if not isinstance(payload.get("isDelivered"), bool):
        raise _bad("isDelivered must be true or false")
    if "deliveredDate" not in payload or not isinstance(payload["deliveredDate"], (str, type(None))):
        raise _bad("deliveredDate must be a string or null")
    events = payload.get("events")
    if not isinstance(events, list):
        raise _bad("events must be a list")
    for index, event in enumerate(events):
        if not isinstance(event, dict) or not all(isinstance(event.get(name), str)
                                                  for name in ("city", "state", "description", "date")):
            raise _bad(f"events[{index}] must have city, state, description and date, all strings")
    return {"isDelivered": payload["isDelivered"], "deliveredDate": payload["deliveredDate"], "events": events}


# ---- the order's side (call with the sandbox lock held) ----------------------------------------------------


def find_package(record: OrderRecord, number: str) -> dict[str, Any] | None:
    return next((package for package in record.packages if package.get("invoiceNumber") == number), None)


def _check_state(record: OrderRecord, invoice: Invoice) -> None:
    # An invoiced order passes here: nothing is left to invoice, so _check_amount refuses it like any excess.
    if invoice.type == "Output" and record.status not in INVOICEABLE | {"invoiced"}:
        raise PostSaleError(409, f"Order status should be one of {', '.join(sorted(INVOICEABLE))} "
                                 f"to receive an invoice, not {record.status}")
    if invoice.type == "Input" and record.status != "invoiced":
        raise PostSaleError(409, "A return (Input) invoice needs the whole order invoiced first")


def _check_items(record: OrderRecord, invoice: Invoice) -> None:
    """Each SKU must be in the order, and all invoices of one type together never invoice more than was ordered."""
    ordered: Counter[str] = Counter()
    for item in record.doc["items"]:
        ordered[str(item["id"])] += int(item["quantity"])
    invoiced: Counter[str] = Counter()
    for package in record.packages:
        if package.get("type") == invoice.type:
            for line in package["items"]:
                invoiced[str(record.doc["items"][line["itemIndex"]]["id"])] += int(line["quantity"])
    for item in invoice.items:
        invoiced[item.sku] += item.quantity
        if item.sku not in ordered:
            raise _bad(f"SKU {item.sku} is not an item of order {record.order_id}")
        if invoiced[item.sku] > ordered[item.sku]:
            raise _bad(f"SKU {item.sku}: {invoiced[item.sku]} invoiced as {invoice.type}, "
                       f"but the order has {ordered[item.sku]}")


def _check_amount(record: OrderRecord, invoice: Invoice) -> None:
    if invoice.type == "Output":
        left = record.doc["value"] - record.invoiced_value()
        if invoice.value > left:
            raise _bad(f"invoiceValue {invoice.value} exceeds what is left to invoice on the order ({left})")
    elif invoice.value > record.invoiced_value() - record.returned_value():
        raise _bad(f"invoiceValue {invoice.value} exceeds what is left to return on the order "
                   f"({record.invoiced_value() - record.returned_value()})")


def _package(record: OrderRecord, invoice: Invoice) -> dict[str, Any]:
    """The invoice as Get order shows it in `packageAttachment.packages` (VTEX's example, field for field)."""
    index_of = {}
    for index, item in enumerate(record.doc["items"]):
        index_of.setdefault(str(item["id"]), index)
    lines = [{"itemIndex": index_of[item.sku], "quantity": item.quantity, "price": item.price,
              "description": item.description,
              "unitMultiplier": record.doc["items"][index_of[item.sku]].get("unitMultiplier")}
             for item in invoice.items]
    texts = invoice.texts
    package: dict[str, Any] = {
        "items": lines, "courier": invoice.courier, "invoiceNumber": invoice.number, "invoiceValue": invoice.value,
        "invoiceUrl": texts["invoiceUrl"], "issuanceDate": invoice.issuance_date,
        "trackingNumber": texts["trackingNumber"], "invoiceKey": texts["invoiceKey"],
        "trackingUrl": texts["trackingUrl"], "dispatchedDate": texts["dispatchedDate"], "type": invoice.type,
        "courierStatus": None, "cfop": None, "restitutions": {}, "volumes": 1, "EnableInferItems": False,
    }
    # The spec types it as a non-nullable string: a package without an embedded invoice leaves it out.
    if texts["embeddedInvoice"] is not None:
        package["embeddedInvoice"] = texts["embeddedInvoice"]
    if invoice.type == "Input":  # a return refunds the customer; VTEX shows it as `restitutions.Refund`
        package["restitutions"] = {"Refund": {"value": invoice.value, "giftCardData": None, "items": [
            {"useFreight": False, "isCompensation": False, "compensationValue": 0, "id": item.sku,
             "quantity": item.quantity, "price": item.price, "description": item.description or ""}
            for item in invoice.items]}}
    return package


def add_invoice(record: OrderRecord, invoice: Invoice) -> bool:
    """Store the invoice on the order, unless its number is known; True when the order is fully invoiced now."""
    if find_package(record, invoice.number) is not None:
        return False  # the same number again: only the receipt changes, whatever else the body says
    _check_state(record, invoice)
    _check_items(record, invoice)
    _check_amount(record, invoice)
    record.add_package(_package(record, invoice))
    return invoice.type == "Output" and record.invoiced_value() == record.doc["value"]


def _known_package(record: OrderRecord, number: str) -> dict[str, Any]:
    package = find_package(record, number)
    if package is None:
        raise PostSaleError(404, f"Invoice {number} not found in order {record.order_id}")
    return package


def set_tracking(record: OrderRecord, number: str, fields: dict[str, str | None]) -> None:
    _known_package(record, number).update(fields)
    record.changed()


def set_courier_status(record: OrderRecord, number: str, status: dict[str, Any], received_at: str) -> None:
    """Tracking events replace the package's `courierStatus`; VTEX wants a tracking number registered first."""
    package = _known_package(record, number)
    if not package.get("trackingNumber"):
        raise PostSaleError(409, f"Invoice {number} has no tracking number: send it first (PATCH the invoice)")
    courier_status: dict[str, Any] = {"status": "ok", "finished": status["isDelivered"], "data": [
        {"lastChange": received_at, "city": event["city"], "state": event["state"],
         "description": event["description"], "createDate": event["date"]} for event in status["events"]]}
    if status["deliveredDate"] is not None:  # a non-nullable string in Get order's schema
        courier_status["deliveredDate"] = status["deliveredDate"]
    package["courierStatus"] = courier_status
    record.changed()
