"""What an ERP sends back to VTEX after handling: invoice, tracking, tracking events and cancel.

`PostSaleActions` is mixed into `Sandbox` next to `RouteActions`, works on the same state and takes
`self._lock` for every access. Status changes go through `_move`, so the feed and the hook see them like
any other. Each accepted call answers 200 {"date", "orderId", "receipt"} (VTEX's examples).
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Any

from sandbox import invoices
from sandbox.faults import json_response
from sandbox.invoices import PostSaleError
from sandbox.orders import OrderRecord
from sandbox.records import Response
from sandbox.timestamps import iso_offset

if TYPE_CHECKING:
    from collections.abc import Callable

    from sandbox.routes import Call
    from sandbox.routing import Route

# VTEX refuses to cancel an invoiced order and, with 400, a partially invoiced one (spec, Cancel order and
# Invoice notification); an invoice being verified ("invoice") is past that point too.
NOT_CANCELLABLE = frozenset({"invoice", "invoiced"})
# VTEX passes through an intermediate status before each final one; a second step lands this much later, so
# its change time never equals the first one's.
STEP_SECONDS = 0.0001


def parse_cancel(payload: Any) -> tuple[str, bool]:
    """Cancel's body: `reason` (spec) and `requestedByUser` (VTEX's cancel guide), both optional."""
    if not isinstance(payload, dict):
        raise PostSaleError(400, "body must be a JSON object")
    reason, by_user = payload.get("reason"), payload.get("requestedByUser", False)
    if reason is not None and not isinstance(reason, str):
        raise PostSaleError(400, "reason must be a string")
    if not isinstance(by_user, bool):
        raise PostSaleError(400, "requestedByUser must be true or false")
    return reason or "", by_user


def check_cancellable(record: OrderRecord) -> None:
    # The error code is the sandbox's choice: VTEX documents the 400, not its body.
    if record.status in NOT_CANCELLABLE:
        raise PostSaleError(400, f"Order cannot be canceled: it is {record.status}", code="OMS004")
    if record.invoiced_value():
        raise PostSaleError(400, "Order cannot be canceled: it is partially invoiced", code="OMS004")


class PostSaleActions:
    # Provided by Sandbox.
    _lock: threading.Lock
    _orders: dict[str, OrderRecord]
    _data_rng: random.Random
    clock: Callable[[], float]
    _move: Callable[[OrderRecord, str, float], dict[str, Any]]
    _order_not_found: Callable[[], Response]

    def order_summary(self, order_id: str) -> dict[str, Any]:
        """Status, amounts, invoices (as Get order shows them) and every receipt: for tests and /_sandbox."""
        with self._lock:
            record = self._orders.get(order_id)
            if record is None:
                raise KeyError(f"unknown order {order_id!r}")
            copy = record.copy()
            return {
                "orderId": order_id, "status": record.status, "value": copy["value"],
                "invoicedValue": record.invoiced_value(), "returnedValue": record.returned_value(),
                "allowCancellation": copy["allowCancellation"], "cancelReason": copy.get("cancelReason"),
                "packages": copy["packageAttachment"]["packages"] if copy.get("packageAttachment") else [],
                "invoiceReceipts": {number: list(receipts) for number, receipts in record.invoice_receipts.items()},
                "cancelReceipts": list(record.cancel_receipts),
            }

    def _receipt(self) -> str:
        """VTEX's receipt: 32 lower-case hex digits, new on every accepted call (call with the lock held)."""
        return f"{self._data_rng.getrandbits(128):032x}"

    @staticmethod
    def _receipt_answer(order_id: str, now: float, receipt: str) -> Response:
        return json_response(200, {"date": iso_offset(now), "orderId": order_id, "receipt": receipt})

    def _do_invoice(self, route: Route, call: Call) -> Response:
        invoice = invoices.parse_invoice(call.json())  # parsed outside the lock: an embedded invoice can be large
        now = self.clock()
        with self._lock:
            record = self._orders.get(route.order_id)
            if record is None:
                return self._order_not_found()
            if invoices.add_invoice(record, invoice):
                # The whole value is invoiced: VTEX verifies the invoice ("invoice") and then the order is
                # "invoiced"; both changes reach the feed and the hook. A partial invoice changes no status.
                self._move(record, "invoice", now)
                self._move(record, "invoiced", max(self.clock(), now + STEP_SECONDS))
            receipt = self._receipt()
            record.invoice_receipts.setdefault(invoice.number, []).append(receipt)
        return self._receipt_answer(route.order_id, now, receipt)

    def _do_tracking(self, route: Route, call: Call) -> Response:
        fields = invoices.parse_tracking(call.json())
        now = self.clock()
        with self._lock:
            record = self._orders.get(route.order_id)
            if record is None:
                return self._order_not_found()
            invoices.set_tracking(record, route.invoice_number, fields)
            receipt = self._receipt()
        return self._receipt_answer(route.order_id, now, receipt)

    def _do_tracking_status(self, route: Route, call: Call) -> Response:
        status = invoices.parse_tracking_status(call.json())
        now = self.clock()
        with self._lock:
            record = self._orders.get(route.order_id)
            if record is None:
                return self._order_not_found()
            invoices.set_courier_status(record, route.invoice_number, status, iso_offset(now))
            receipt = self._receipt()
        return self._receipt_answer(route.order_id, now, receipt)

    def _do_cancel(self, route: Route, call: Call) -> Response:
        reason, by_user = parse_cancel(call.json(allow_empty=True))
        now = self.clock()
        with self._lock:
            record = self._orders.get(route.order_id)
            if record is None:
                return self._order_not_found()
            check_cancellable(record)
            if record.status != "canceled":  # cancelling twice answers 200 again, without new events
                if record.status != "cancel":
                    record.set_cancellation(reason, by_user, now)
                    self._move(record, "cancel", now)
                # The platform goes through "cancel" (Canceling) to "canceled"; both changes reach the feed.
                self._move(record, "canceled", max(self.clock(), now + STEP_SECONDS))
            receipt = self._receipt()
            record.cancel_receipts.append(receipt)
        return self._receipt_answer(route.order_id, now, receipt)
