"""ERP connectors. The built-in one POSTs JSON; others plug in by dotted path (ErpConnection.connector).

Contract (README "ERP contract"): 2xx = accepted (a JSON "id" is kept as the ERP reference),
409 = the ERP already has it = accepted, 408/429/5xx/timeouts = retry, other 4xx = needs attention.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import requests
from django.conf import settings
from django.utils.module_loading import import_string

from core.call_counts import call_record
from core.models import ErpConnection
from core.vtex.client import EXCERPT_CHARS, parse_retry_after
from integrationhub.http import new_session

Outcome = Literal["accepted", "retry", "rejected"]
ORDER_READY = "order.ready"
ORDER_CANCELED = "order.canceled"


@dataclass(frozen=True)
class ErpResult:
    outcome: Outcome
    message: str
    status: int | None = None
    reference: str = ""
    duration_ms: int = 0
    excerpt: str = ""
    retry_after: float | None = None


class ErpConnector(Protocol):
    def send(self, *, event: str, store_name: str, order_id: str, order: dict, idempotency_key: str) -> ErpResult: ...


def idempotency_key(*, store_name: str, order_id: str, event: str) -> str:
    """The same for every retry or replay of one (store, order, event), so an ERP can drop repeats."""
    return hashlib.sha256(f"{store_name}\n{order_id}\n{event}".encode()).hexdigest()[:40]


class ErpConfigError(Exception):
    """The store names a connector the hub does not allow (a row written before the allowlist existed)."""


def connector_for(connection: ErpConnection) -> ErpConnector:
    path = connection.connector or ErpConnection.DEFAULT_CONNECTOR
    if path not in settings.HUB_ERP_CONNECTORS:  # checked again here: a dotted path is code the workers run
        raise ErpConfigError(f"the ERP connector {path!r} is not listed in HUB_ERP_CONNECTORS")
    return CountedConnector(import_string(path)(connection))


# The metrics' `operation` label of each event the hub sends.
OPERATIONS = {ORDER_READY: "erp_send", ORDER_CANCELED: "erp_cancel"}


class CountedConnector:
    """Any connector, with each send counted for /metrics: the count lives here, not in each plug-in."""

    def __init__(self, inner: ErpConnector) -> None:
        self.inner = inner

    def send(self, *, event: str, store_name: str, order_id: str, order: dict, idempotency_key: str) -> ErpResult:
        started = time.monotonic()
        status = "error"  # no answer, or the connector raised
        try:
            result = self.inner.send(event=event, store_name=store_name, order_id=order_id, order=order,
                                     idempotency_key=idempotency_key)
            if result.status is not None:
                status = str(result.status)
            return result
        finally:
            # Timed here rather than read from the result: a plug-in may leave duration_ms at 0.
            call_record("erp", store_name, OPERATIONS.get(event, "other"), status, _since(started))


class HttpErpConnector:
    """POST {"event", "store", "orderId", "order"} to the ERP URL. Not thread-safe: one per thread."""

    def __init__(self, connection: ErpConnection) -> None:
        self.url = connection.url
        self.timeout = connection.timeout_seconds
        self.session = new_session(self.url)
        self.session.headers.update({str(k): str(v) for k, v in (connection.headers or {}).items()})
        self.session.headers["Content-Type"] = "application/json"

    def send(self, *, event: str, store_name: str, order_id: str, order: dict, idempotency_key: str) -> ErpResult:
        body = {"event": event, "store": store_name, "orderId": order_id, "order": order}
        started = time.monotonic()
        try:
            response = self.session.post(
                self.url, data=json.dumps(body), headers={"Idempotency-Key": idempotency_key}, timeout=self.timeout
            )
        except requests.Timeout:
            return ErpResult("retry", f"ERP gave no answer within {self.timeout:g}s", duration_ms=_since(started))
        except requests.RequestException as exc:
            return ErpResult("retry", f"ERP unreachable: {type(exc).__name__}", duration_ms=_since(started))
        status, excerpt = response.status_code, response.text[:EXCERPT_CHARS]
        common: dict[str, Any] = {"status": status, "duration_ms": _since(started), "excerpt": excerpt}
        if 200 <= status < 300:
            return ErpResult("accepted", f"ERP accepted (HTTP {status})", reference=_erp_id(response), **common)
        if status == 409:
            return ErpResult("accepted", "ERP already has it (HTTP 409)", reference=_erp_id(response), **common)
        if status in (408, 429) or status >= 500:
            return ErpResult("retry", f"ERP answered HTTP {status}",
                             retry_after=parse_retry_after(response.headers.get("Retry-After")), **common)
        return ErpResult("rejected", f"ERP refused the order: HTTP {status}", **common)


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _erp_id(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    value = data.get("id") if isinstance(data, dict) else None
    return str(value)[:200] if value is not None else ""
