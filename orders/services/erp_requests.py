"""What the ERP asks the hub to carry to VTEX (invoice, tracking, cancel): authenticated, checked, then recorded.

Reference: ../shared/vtex/ORDERS-API.md §4. The ERP's API (orders/erp_api.py) only records an `ErpRequest`
and marks the order due; the dispatcher sends it to VTEX later, with the same retries and claims as the rest
of the order's work. Every check runs before anything is written, the ones against earlier requests under the
order's row lock (two invoices at once cannot both fit in what is left), and a refused request writes nothing.

Identity, so a repeat is never a second call to VTEX with other content:
- an invoice is its invoice number (whatever Idempotency-Key comes with it);
- a cancel is the order's only cancel;
- a tracking update is its invoice number and its content;
- and a request that repeats an Idempotency-Key (per order and kind) is that request.
Repeating one with the same content answers the same record again; with other content, a 409.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from core.erp_api_key import erp_api_key_check
from core.models import Store
from orders.models import ErpRequest, OrderSync

log = logging.getLogger("hub.orders")

Kind = ErpRequest.Kind
INVOICE_TYPES = ("Output", "Input")
MAX_INVOICE_NUMBER = 100  # ErpRequest.invoice_number
MAX_REASON = 500
MAX_TEXT = 2048  # URLs, keys, tracking numbers: a presigned invoice URL fits
MAX_EMBEDDED = 64 * 1024  # embeddedInvoice (the invoice's XML): the body's own limit (orders/erp_api.py)
MAX_IDEMPOTENCY_KEY = 200  # ErpRequest.idempotency_key
MAX_DIGITS = 15  # cents: up to ten trillion units of money, far inside BigIntegerField
# VTEX's invoice fields (InvoiceNotification in the spec), beside the required ones.
INVOICE_TEXTS = ("invoiceKey", "invoiceUrl", "embeddedInvoice", "trackingNumber", "trackingUrl")
INVOICE_FIELDS = frozenset({"type", "issuanceDate", "invoiceNumber", "invoiceValue", "items", "courier",
                            "dispatchedDate", *INVOICE_TEXTS})
ITEM_FIELDS = frozenset({"id", "price", "quantity", "description"})
# VTEX's PATCH …/invoice/{invoiceNumber} requires all four keys; only the tracking number may not be null.
TRACKING_FIELDS = ("trackingNumber", "trackingUrl", "courier", "dispatchedDate")
CANCEL_FIELDS = frozenset({"reason", "requestedByUser"})
CANCELED_STATUSES = frozenset({"cancel", "canceled"})
INVOICED_STATUSES = frozenset({"invoice", "invoiced"})
_DIGITS = re.compile(r"[0-9]+")
_DATE_AND_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_TEXT = re.compile(r"[\x20-\x7e]+")


class ErpRequestRefused(Exception):
    """The ERP's request is refused: the HTTP status, the reason, and the field it is about (if one is)."""

    def __init__(self, status: int, reason: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.field, self.headers = status, reason, field, headers or {}

    @property
    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"reason": self.reason}
        if self.field is not None:
            error = {"field": self.field, **error}
        return {"error": error}


def _bad(field: str, reason: str) -> ErpRequestRefused:
    return ErpRequestRefused(400, reason, field)


@dataclass(frozen=True)
class RecordResult:
    request: ErpRequest
    created: bool  # False: the same request was recorded before, and this is it


# --- the store's key (made and checked by core.erp_api_key) ----------------------------------------

def erp_api_authenticate(*, store_name: str, authorization: str | None) -> Store:
    """The store named in the URL, once the caller showed its key (`Authorization: Bearer <key>`).

    An unknown or disabled store answers 404 before any key is looked at: store names are not secret (the
    hook's URL has them too) and VTEX could not take the requests of a store the hub does not work. Past
    that, one 401 for a missing, malformed or wrong key, or a store without one: nothing to tell them apart.
    """
    store = Store.objects.filter(name=store_name, enabled=True).first()
    if store is None:
        raise ErpRequestRefused(404, "no such store")
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not erp_api_key_check(store, presented.strip()):
        raise ErpRequestRefused(401, "missing or wrong API key (Authorization: Bearer <the store's ERP API key>)",
                                headers={"WWW-Authenticate": 'Bearer realm="erp"'})
    return store


# --- the request's body, checked alone -------------------------------------------------------------

@dataclass(frozen=True)
class Draft:
    """A request as it will be recorded: VTEX's body, and the columns the sender and the checks read."""

    kind: str
    payload: dict[str, Any]
    key: str  # derived from the content; an Idempotency-Key header replaces it
    invoice_number: str = ""
    invoice_type: str = ""
    invoice_value: int | None = None
    reason: str = ""


def _unknown(body: dict[str, Any], allowed: frozenset[str] | tuple[str, ...], where: str = "") -> None:
    for name in body:
        if name not in allowed:
            raise _bad(where + name, f"unknown field: VTEX's fields here are {', '.join(sorted(allowed))}")


def _whole(value: Any, field: str, *, minimum: int) -> int:
    """A whole number: a JSON integer, or a string of digits (VTEX's own invoiceValue is one)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value) and len(value) <= MAX_DIGITS:
        number = int(value)
    else:
        raise _bad(field, "must be a whole number (cents for amounts, no separators or decimals): "
                          "a JSON integer or a string of digits")
    if number < minimum or number >= 10 ** MAX_DIGITS:
        raise _bad(field, f"must be at least {minimum}" if number < minimum else "is too large")
    return number


def _text(body: dict[str, Any], name: str, *, required: bool = False, limit: int = MAX_TEXT) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise _bad(name, "is required: a non-empty string" if required else "must be a string or null")
    if len(value) > limit:
        raise _bad(name, f"is longer than {limit} characters")
    return value


def _date_time(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    """A date *and time* in ISO 8601 (VTEX asks for the time too), like 2024-01-31T18:25:43-05:00."""
    value = body.get(name)
    if not required and value in (None, ""):
        return value
    if isinstance(value, str) and _DATE_AND_TIME.match(value):
        try:
            datetime.fromisoformat(value)
            return value
        except ValueError:
            pass
    raise _bad(name, "must be a date and time in ISO 8601, like 2024-01-31T18:25:43-05:00")


def _invoice_number(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(field, "is required: a non-empty string")
    if len(value) > MAX_INVOICE_NUMBER:
        raise _bad(field, f"is longer than {MAX_INVOICE_NUMBER} characters")
    if _CONTROL.search(value):
        raise _bad(field, "contains a line break or control character")  # it goes into VTEX's URL
    return value


def _item(raw: Any, index: int) -> dict[str, Any]:
    where = f"items[{index}]"
    if not isinstance(raw, dict):
        raise _bad(where, "must be an object with id, price and quantity")
    _unknown(raw, ITEM_FIELDS, where + ".")
    sku = raw.get("id")
    if not isinstance(sku, str) or not sku.strip():
        raise _bad(where + ".id", "is required: the SKU id, a string")
    # Gifts are invoiced at 0; VTEX multiplies the unit price by the quantity.
    item = {"id": sku, "price": _whole(raw.get("price"), where + ".price", minimum=0),
            "quantity": _whole(raw.get("quantity"), where + ".quantity", minimum=1)}
    description = raw.get("description")
    if description is not None:
        if not isinstance(description, str) or len(description) > MAX_TEXT:
            raise _bad(where + ".description", f"must be a string of at most {MAX_TEXT} characters")
        item["description"] = description
    return item


def invoice_draft(body: dict[str, Any]) -> Draft:
    """VTEX's invoice notification body, normalised to the types VTEX wants: invoiceValue a string of cents,
    item prices and quantities integers. Unknown fields are refused rather than dropped: a typo must not
    silently leave a field out of a fiscal document."""
    _unknown(body, INVOICE_FIELDS)
    kind = body.get("type")
    if kind not in INVOICE_TYPES:
        raise _bad("type", "must be Output (a sale) or Input (a return)")
    number = _invoice_number(body.get("invoiceNumber"), "invoiceNumber")
    value = _whole(body.get("invoiceValue"), "invoiceValue", minimum=1)
    items = body.get("items")
    if not isinstance(items, list) or not items:
        raise _bad("items", "must list the invoiced SKUs: [{id, price, quantity}]")
    payload: dict[str, Any] = {"type": kind, "issuanceDate": _date_time(body, "issuanceDate", required=True),
                               "invoiceNumber": number, "invoiceValue": str(value)}
    for name in INVOICE_TEXTS:
        if name in body:
            payload[name] = _text(body, name, limit=MAX_EMBEDDED if name == "embeddedInvoice" else MAX_TEXT)
    if body.get("courier") is not None:  # the one optional field VTEX makes non-nullable: null is left out
        payload["courier"] = _text(body, "courier")
    if "dispatchedDate" in body:
        payload["dispatchedDate"] = _date_time(body, "dispatchedDate", required=False)
    payload["items"] = [_item(raw, index) for index, raw in enumerate(items)]
    return Draft(kind=Kind.INVOICE, payload=payload, key=f"invoice:{number}", invoice_number=number,
                 invoice_type=kind, invoice_value=value)


def tracking_draft(body: dict[str, Any], invoice_number: str) -> Draft:
    """The body of VTEX's PATCH …/invoice/{invoiceNumber}: all four keys, absent ones sent as null."""
    _unknown(body, TRACKING_FIELDS)
    number = _invoice_number(invoice_number, "invoiceNumber")
    payload = {"trackingNumber": _text(body, "trackingNumber", required=True), "trackingUrl": _text(body, "trackingUrl"),
               "courier": _text(body, "courier"), "dispatchedDate": _date_time(body, "dispatchedDate", required=False)}
    digest = hashlib.sha256(_canonical(payload).encode()).hexdigest()[:16]
    return Draft(kind=Kind.TRACKING, payload=payload, key=f"tracking:{number}:{digest}", invoice_number=number)


def cancel_draft(body: dict[str, Any]) -> Draft:
    """VTEX's cancel body: a reason, and `requestedByUser` when the ERP says who asked (VTEX's cancel guide)."""
    _unknown(body, CANCEL_FIELDS)
    reason = (_text(body, "reason", required=True, limit=MAX_REASON) or "").strip()
    payload: dict[str, Any] = {"reason": reason}
    if "requestedByUser" in body:
        if not isinstance(body["requestedByUser"], bool):
            raise _bad("requestedByUser", "must be true or false")
        payload["requestedByUser"] = body["requestedByUser"]
    return Draft(kind=Kind.CANCEL, payload=payload, key="cancel", reason=reason)


def _canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def idempotency_key_clean(value: str | None) -> str | None:
    if value is None:
        return None
    key = value.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not _HEADER_TEXT.fullmatch(key):
        raise _bad("Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters")
    return key


def erp_request_draft(*, kind: str, body: Any, invoice_number: str | None = None) -> Draft:
    if not isinstance(body, dict):
        raise _bad("body", "must be a JSON object")
    if kind == Kind.INVOICE:
        return invoice_draft(body)
    if kind == Kind.TRACKING:
        return tracking_draft(body, invoice_number or "")
    if kind == Kind.CANCEL:
        return cancel_draft(body)
    raise ValueError(f"unknown kind {kind!r}")


# --- the order's side: what the hub knows of it -----------------------------------------------------

@dataclass(frozen=True)
class Invoiced:
    """One invoice the order already has: recorded by the hub (not refused by VTEX), or on VTEX's document."""

    number: str
    type: str
    value: int
    skus: Counter[str]


@dataclass
class OrderFacts:
    order: OrderSync
    status: str
    total: int
    ordered: Counter[str]
    invoices: list[Invoiced]
    refused_numbers: set[str]  # invoices recorded and refused by VTEX, and nowhere else

    def invoiced(self, kind: str) -> int:
        return sum(invoice.value for invoice in self.invoices if invoice.type == kind)

    def quantities(self, kind: str) -> Counter[str]:
        total: Counter[str] = Counter()
        for invoice in self.invoices:
            if invoice.type == kind:
                total.update(invoice.skus)
        return total

    @property
    def canceled(self) -> bool:
        return self.order.state == OrderSync.State.CANCELED or self.status in CANCELED_STATUSES


def _cents_or_none(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    return None


def order_facts(order: OrderSync) -> OrderFacts:
    """The order's total, items and invoices, from the hub's stored copy of VTEX's Get order and its records."""
    doc = order.order_snapshot
    if not isinstance(doc, dict) or not doc:
        raise ErpRequestRefused(409, "the hub has not received this order from VTEX yet: try again later")
    total, items = _cents_or_none(doc.get("value")), doc.get("items")
    if total is None or not isinstance(items, list):
        raise ErpRequestRefused(409, "the hub's copy of this order has no total or items: try again later")
    skus = [str(item.get("id")) if isinstance(item, dict) else "" for item in items]
    ordered: Counter[str] = Counter()
    for sku, item in zip(skus, items):
        if sku:
            ordered[sku] += _cents_or_none(item.get("quantity")) or 0
    recorded = [request for request in order.erp_requests.filter(kind=Kind.INVOICE)]
    invoices = [Invoiced(number=r.invoice_number, type=r.invoice_type, value=r.invoice_value or 0,
                         skus=_payload_skus(r.payload)) for r in recorded if r.state != ErpRequest.State.REFUSED]
    known = {invoice.number for invoice in invoices}
    # Invoices VTEX has that the hub did not carry (another system, or before the hub): they count too.
    packages = (doc.get("packageAttachment") or {}).get("packages") or []
    for package in packages if isinstance(packages, list) else []:
        if not isinstance(package, dict) or str(package.get("invoiceNumber") or "") in known:
            continue
        number = str(package.get("invoiceNumber") or "")
        invoices.append(Invoiced(number=number, type=str(package.get("type") or "Output"),
                                 value=_cents_or_none(package.get("invoiceValue")) or 0,
                                 skus=_package_skus(package, skus)))
        known.add(number)
    refused = {r.invoice_number for r in recorded if r.state == ErpRequest.State.REFUSED} - known
    return OrderFacts(order=order, status=str(doc.get("status") or ""), total=total, ordered=ordered,
                      invoices=invoices, refused_numbers=refused)


def _payload_skus(payload: Any) -> Counter[str]:
    skus: Counter[str] = Counter()
    for item in (payload or {}).get("items") or []:
        skus[str(item.get("id"))] += int(item.get("quantity") or 0)
    return skus


def _package_skus(package: dict[str, Any], skus: list[str]) -> Counter[str]:
    """A Get-order package names its lines by `itemIndex` into the order's items."""
    counted: Counter[str] = Counter()
    for line in package.get("items") or []:
        if not isinstance(line, dict):
            continue
        index = line.get("itemIndex")
        sku = str(line["id"]) if line.get("id") is not None else (
            skus[index] if isinstance(index, int) and 0 <= index < len(skus) else "")
        if sku:
            counted[sku] += _cents_or_none(line.get("quantity")) or 0
    return counted


# --- the rules against the order ---------------------------------------------------------------------

def _check_invoice(facts: OrderFacts, draft: Draft) -> None:
    if facts.canceled:
        raise ErpRequestRefused(409, f"order {facts.order.order_id} is canceled: it cannot be invoiced")
    value, output, returned = draft.invoice_value or 0, facts.invoiced("Output"), facts.invoiced("Input")
    if draft.invoice_type == "Input":
        if output < facts.total:
            raise ErpRequestRefused(409, f"a return (Input) invoice is accepted only once the order is fully "
                                         f"invoiced: {output} of {facts.total} cents are", "type")
        if value > output - returned:
            raise _bad("invoiceValue", f"{value} exceeds what is left to return on the order "
                                       f"({output - returned} cents)")
    elif output + value > facts.total:
        raise _bad("invoiceValue", f"{value} exceeds what is left to invoice on the order "
                                   f"({facts.total - output} of {facts.total} cents)")
    already = facts.quantities(draft.invoice_type)
    added: Counter[str] = Counter()
    for index, item in enumerate(draft.payload["items"]):
        sku = item["id"]
        if sku not in facts.ordered:
            raise _bad(f"items[{index}].id", f"SKU {sku} is not an item of order {facts.order.order_id}")
        added[sku] += item["quantity"]
        if already[sku] + added[sku] > facts.ordered[sku]:
            raise _bad(f"items[{index}].quantity",
                       f"SKU {sku}: {already[sku] + added[sku]} invoiced as {draft.invoice_type} in all, "
                       f"but the order has {facts.ordered[sku]}")


def _check_tracking(facts: OrderFacts, draft: Draft) -> None:
    if any(invoice.number == draft.invoice_number for invoice in facts.invoices):
        return
    if draft.invoice_number in facts.refused_numbers:
        raise ErpRequestRefused(409, f"invoice {draft.invoice_number} was refused by VTEX: "
                                     "it has no tracking to update", "invoiceNumber")
    raise ErpRequestRefused(404, f"invoice {draft.invoice_number} is not an invoice of order "
                                 f"{facts.order.order_id}", "invoiceNumber")


def _check_cancel(facts: OrderFacts, draft: Draft) -> None:
    if facts.canceled:
        raise ErpRequestRefused(409, f"order {facts.order.order_id} is already canceled")
    if facts.status in INVOICED_STATUSES or any(invoice.type == "Output" for invoice in facts.invoices):
        raise ErpRequestRefused(409, "VTEX refuses to cancel an invoiced order, even a partially invoiced one: "
                                     "send a return (Input) invoice instead")


CHECKS = {Kind.INVOICE: _check_invoice, Kind.TRACKING: _check_tracking, Kind.CANCEL: _check_cancel}


# --- recording ---------------------------------------------------------------------------------------

def _same_request(order: OrderSync, draft: Draft, key: str | None) -> ErpRequest | None:
    """The request recorded before that this one repeats, if any; a 409 when it repeats it with other content."""
    earlier = order.erp_requests.filter(kind=draft.kind)
    if draft.kind == Kind.INVOICE:
        found, what = earlier.filter(invoice_number=draft.invoice_number).first(), f"invoice {draft.invoice_number}"
    elif draft.kind == Kind.CANCEL:
        found, what = earlier.first(), "a cancel of this order"
    else:  # tracking: new content for the same invoice is a new update; the same content, the same one
        found = next((r for r in earlier.filter(invoice_number=draft.invoice_number) if r.payload == draft.payload),
                     None)
        what = f"tracking of invoice {draft.invoice_number}"
    # Then the key, the header's or, without one, the derived one the new row would take.
    if found is None:
        found, what = earlier.filter(idempotency_key=key or draft.key).first(), f"Idempotency-Key {key or draft.key}"
    if found is not None and found.payload != draft.payload:
        raise ErpRequestRefused(409, f"{what} was already recorded with different content "
                                     f"(request {found.pk}, {found.state})")
    return found


def erp_request_record(*, store: Store, order_id: str, kind: str, body: Any, idempotency_key: str | None,
                       invoice_number: str | None = None, requested_by: str = "erp") -> RecordResult:
    """Check the ERP's request and record it, or find the same one recorded before; raises ErpRequestRefused.

    A new request marks the order due (vtex_pending, next_attempt_at now), so the dispatcher sends it soon.
    A claim on the order stays as it is: the worker holding it reads the flag again when it saves.
    """
    key = idempotency_key_clean(idempotency_key)
    draft = erp_request_draft(kind=kind, body=body, invoice_number=invoice_number)
    with transaction.atomic():
        order = OrderSync.objects.select_for_update().filter(store=store, order_id=order_id).first()
        if order is None:
            raise ErpRequestRefused(404, f"order {order_id} is not known to the hub for store {store.name}")
        same = _same_request(order, draft, key)
        if same is not None:
            return RecordResult(request=same, created=False)
        CHECKS[draft.kind](order_facts(order), draft)
        request = ErpRequest.objects.create(
            order=order, kind=draft.kind, idempotency_key=key or draft.key, payload=draft.payload,
            invoice_number=draft.invoice_number, invoice_type=draft.invoice_type, invoice_value=draft.invoice_value,
            reason=draft.reason, requested_by=requested_by)
        _order_due(order)
    log.info("ERP request %s recorded: %s %s of order %s (%s)", request.pk, draft.kind, draft.invoice_number,
             order.order_id, store.name)
    return RecordResult(request=request, created=True)


def _order_due(order: OrderSync) -> None:
    now = timezone.now()
    order.vtex_pending = True
    fields = ["vtex_pending", "updated_at"]
    # Never later than it was: an order waiting out a backoff of its ERP step still gets its VTEX work now.
    if order.next_attempt_at is None or order.next_attempt_at > now:
        order.next_attempt_at = now
        fields.append("next_attempt_at")
    order.save(update_fields=fields)
