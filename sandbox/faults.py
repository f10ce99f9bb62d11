"""Error bodies and fault injection: scripted (`fail_next`) and random (rate knobs)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from sandbox.orders import load_fixture
from sandbox.records import Response

ROUTES = frozenset({
    "feed_read", "feed_commit", "feed_config_get", "feed_config_set", "feed_config_delete", "order_get",
    "start_handling", "cancel", "erp", "hook_config_get", "hook_config_set", "hook_config_delete",
    "invoice", "tracking", "tracking_status",
})
# Routes answering {"date", "orderId", "receipt"}: VTEX's receipt for a change it accepted.
RECEIPT_ROUTES = frozenset({"cancel", "invoice", "tracking", "tracking_status"})
# Routes whose normal answer is a JSON body with 200: the only ones a random "broken JSON" fault hits.
JSON_ROUTES = frozenset({"feed_read", "feed_config_get", "order_get", "hook_config_get"}) | RECEIPT_ROUTES
# A scripted "timeout" on these first does the real work, so tests can play "the server acted, the client gave up":
# every call that changes an order.
ACT_THEN_SLEEP = frozenset({"erp", "start_handling"}) | RECEIPT_ROUTES

UNAUTHORIZED = load_fixture("start-handling-401-unauthorized.json")
NOT_READY_FOR_HANDLING = load_fixture("start-handling-409-not-ready-for-handling.json")


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload, ensure_ascii=False).encode(), dict(headers or {}))


def vtex_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """OMS error shape, documented for start-handling 401/409 and assumed for the rest."""
    return json_response(status, {"error": {"code": code, "message": message, "exception": None}}, headers)


def rate_limited(retry_after_seconds: int | None) -> Response:
    headers = {} if retry_after_seconds is None else {"Retry-After": str(retry_after_seconds)}
    return vtex_error(429, "429", "Too many requests", headers)


def unavailable() -> Response:
    return vtex_error(503, "503", "Service unavailable")


def truncated(body: bytes) -> bytes:
    """Cut a JSON body in the middle, so it can never parse."""
    return body[: max(1, len(body) // 2)]


@dataclass
class ScriptedFault:
    status: int | str  # HTTP status, "broken_json" or "timeout"
    times: int
    headers: dict[str, str] | None
    body: str | bytes | None
    delay_seconds: float

    def __post_init__(self) -> None:
        if self.status not in ("broken_json", "timeout") and not (
            isinstance(self.status, int) and 100 <= self.status <= 599
        ):
            raise ValueError(f"status must be an HTTP status, 'broken_json' or 'timeout', not {self.status!r}")
        if self.times < 1:
            raise ValueError("times must be at least 1")


def scripted_response(route: str, fault: ScriptedFault, retry_after_seconds: int | None) -> Response:
    """The answer for an integer-status scripted fault, with a sensible default body."""
    status = int(fault.status)
    if fault.body is not None:
        body = fault.body.encode() if isinstance(fault.body, str) else fault.body
        headers = {"Content-Type": "application/json; charset=utf-8"} if body else {}
        headers.update(fault.headers or {})
        return Response(status, body, headers)
    if status == 429 and fault.headers is None:
        return rate_limited(retry_after_seconds)
    if status == 409 and route == "start_handling":
        return json_response(409, NOT_READY_FOR_HANDLING, fault.headers)
    if status == 401:
        return json_response(401, UNAUTHORIZED, fault.headers)
    if status < 300:
        return Response(status, b"", dict(fault.headers or {}))
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:  # a non-standard status such as 599
        phrase = "Error"
    if route == "erp":
        return json_response(status, {"error": phrase}, fault.headers)
    return vtex_error(status, str(status), phrase, fault.headers)
