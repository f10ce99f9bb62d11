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


class ErpReceiver:
    """State of the fake ERP; every method is called under the sandbox lock."""

    def __init__(self) -> None:
        self.deliveries: list[ErpDelivery] = []
        self._ids: dict[str, str] = {}
        self._counter = 0
        self._orders: set[str] = set()

    def accept(self, *, key: str, payload: dict[str, Any], headers: dict[str, str], now: float) -> Response:
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
