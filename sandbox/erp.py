"""A minimal ERP that receives orders from the hub and honours `Idempotency-Key`."""

from __future__ import annotations

import json
from typing import Any

from sandbox.faults import json_response
from sandbox.records import ErpDelivery, Response


class ErpRequestError(Exception):
    pass


def parse_erp_request(headers: dict[str, str], body: bytes) -> tuple[str, dict[str, Any]]:
    """Validate an ERP POST; runs outside the sandbox lock because bodies carry whole orders."""
    key = headers.get("idempotency-key", "").strip()
    if not key:
        raise ErpRequestError("Idempotency-Key header is required")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ErpRequestError("body must be JSON") from exc
    if not isinstance(payload, dict):
        raise ErpRequestError("body must be a JSON object")
    for name in ("event", "orderId"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            raise ErpRequestError(f"{name} is required")
    return key, payload


def customer_data_refusal(payload: dict[str, Any]) -> dict[str, str]:
    """The 422 body of a picky ERP: it quotes the customer's e-mail, document and phone back, as real ERPs do."""
    order = payload.get("order")
    profile = order.get("clientProfileData") if isinstance(order, dict) else None
    profile = profile if isinstance(profile, dict) else {}
    email, document, phone = (str(profile.get(name) or "?") for name in ("email", "document", "phone"))
    return {"error": f"customer {email} document {document} phone {phone} failed validation"}


class ErpReceiver:
    """State of the fake ERP; every method is called under the sandbox lock."""

    def __init__(self) -> None:
        # When set, every order.ready is refused with 422 and the customer's data in the answer, so tests and
        # demos can check that the hub shows such answers masked (switch: /_sandbox/faults erp_refuse_customer_data).
        self.refuse_with_customer_data = False
        self.deliveries: list[ErpDelivery] = []
        self._ids: dict[str, str] = {}
        self._counter = 0
        self._orders: set[str] = set()

    def accept(self, *, key: str, payload: dict[str, Any], headers: dict[str, str], now: float) -> Response:
        if self.refuse_with_customer_data and payload["event"] == "order.ready":
            # Recorded as received (the ERP saw the order) but not created: no id, the key stays unknown.
            self.deliveries.append(ErpDelivery(
                idempotency_key=key, event=payload["event"], order_id=payload["orderId"], body=payload,
                headers=headers, at=now, status=422, erp_id="", replay=False,
            ))
            return json_response(422, customer_data_refusal(payload))
        erp_id = self._ids.get(key)
        replay = erp_id is not None
        if erp_id is None:
            self._counter += 1
            erp_id = self._ids[key] = f"ERP-{self._counter:06d}"
        status = 200 if replay else 201
        self.deliveries.append(ErpDelivery(
            idempotency_key=key, event=payload["event"], order_id=payload["orderId"], body=payload,
            headers=headers, at=now, status=status, erp_id=erp_id, replay=replay,
        ))
        self._orders.add(payload["orderId"])
        return json_response(status, {"id": erp_id})

    @property
    def unique_keys(self) -> int:
        return len(self._ids)

    @property
    def unique_orders(self) -> int:
        return len(self._orders)

    def summaries(self) -> list[dict[str, Any]]:
        return [delivery.summary() for delivery in self.deliveries]
