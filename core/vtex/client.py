"""HTTP client for the VTEX Orders API: requests only, no ORM. One function per endpoint.

Reference: ../shared/vtex/ORDERS-API.md (and https://developers.vtex.com/docs/api-reference/orders-api).
Failures raise VtexError; VtexUnavailable marks the ones worth retrying (429, 5xx, timeouts, broken JSON).
A failure without an HTTP answer says why in words (`cause`: connection refused, DNS, TLS, timeout) and
where (`host`), never with the credentials. Every request, answered or not, is counted for /metrics by
core.call_counts (in memory; written to the database away from the caller).
"""

from __future__ import annotations

import email.utils
import errno
import json
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from core.call_counts import call_record
from integrationhub.http import new_session

EXCERPT_CHARS = 500


@dataclass(frozen=True)
class Call:
    """What one HTTP exchange looked like, for the order's timeline."""

    method: str
    path: str
    status: int | None
    duration_ms: int
    excerpt: str = ""


class VtexError(Exception):
    """VTEX answered with an error that retrying the same request will not fix."""

    def __init__(self, message: str, *, call: Call | None = None, code: str = "", host: str = "") -> None:
        super().__init__(message)
        self.call = call
        self.code = code
        self.host = host  # host[:port] asked, for messages: never the path's query, headers or token

    @property
    def status(self) -> int | None:
        return self.call.status if self.call else None


class VtexUnavailable(VtexError):
    """Worth retrying later: 429, 5xx, timeout, connection error, unreadable JSON."""

    def __init__(self, message: str, *, call: Call | None = None, code: str = "", retry_after: float | None = None,
                 host: str = "", failure: str = "", cause: str = "") -> None:
        super().__init__(message, call=call, code=code, host=host)
        self.retry_after = retry_after
        self.failure = failure  # no HTTP answer: one of FAILURES ("" when VTEX answered)
        self.cause = cause  # the same in words, e.g. "connection refused"

    @property
    def rate_limited(self) -> bool:
        return self.status == 429

    @property
    def unreachable(self) -> bool:
        """No connection at all (refused, DNS, TLS, connect timeout): a wrong URL more often than a blip."""
        return self.failure in CONNECTION_FAILURES


# What went wrong when there is no HTTP answer. The first five mean no connection was ever made.
FAILURES = ("refused", "dns", "tls", "connect_timeout", "unreachable", "timeout", "reset", "connection")
CONNECTION_FAILURES = frozenset(FAILURES[:5])


def _exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """exc and what it wraps: requests wraps urllib3's MaxRetryError, whose `reason` wraps the socket error."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        stack += [current.__cause__, current.__context__, reason if isinstance(reason, BaseException) else None,
                  *(arg for arg in current.args if isinstance(arg, BaseException))]


def classify_failure(exc: BaseException, *, timeout: float) -> tuple[str, str]:
    """(failure, cause in words) for a request that got no HTTP answer, from the exception chain."""
    chain = list(_exception_chain(exc))
    tls = [inner for inner in chain if isinstance(inner, (ssl.SSLError, requests.exceptions.SSLError))
           or type(inner).__name__ == "SSLError"]
    if tls:
        # Only the stdlib's error says why ("certificate has expired", "WRONG_VERSION_NUMBER").
        details = [getattr(inner, "verify_message", None) or getattr(inner, "reason", None) for inner in tls]
        detail = next((text for text in details if isinstance(text, str) and text), "")
        return "tls", f"TLS failed ({detail})" if detail else "TLS failed"
    if any(isinstance(inner, socket.gaierror) or type(inner).__name__ == "NameResolutionError" for inner in chain):
        return "dns", "DNS lookup failed (no such host)"
    if any(isinstance(inner, ConnectionRefusedError) for inner in chain):
        return "refused", "connection refused"
    if any(isinstance(inner, requests.ConnectTimeout) or type(inner).__name__ == "ConnectTimeoutError"
           for inner in chain):
        return "connect_timeout", f"timeout (no connection within {timeout:g}s)"
    if any(isinstance(inner, (requests.Timeout, TimeoutError)) or "Timeout" in type(inner).__name__
           for inner in chain):
        return "timeout", f"timeout (no answer within {timeout:g}s)"
    if any(isinstance(inner, OSError) and inner.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH) for inner in chain):
        return "unreachable", "network or host unreachable"
    if any(isinstance(inner, ConnectionResetError) for inner in chain):
        return "reset", "connection reset by the server"
    return "connection", f"connection failed ({type(exc).__name__})"


def host_of(url: str) -> str:
    """host[:port] of a URL, without any user:password@ it may carry."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


@dataclass(frozen=True)
class FeedItem:
    """One item of GET /api/orders/feed. `problem` is set when the item cannot be acted on."""

    raw: Any
    handle: str = ""
    event_id: str = ""
    order_id: str = ""
    state: str = ""
    last_state: str = ""
    domain: str = ""
    last_change: datetime | None = None
    current_change: datetime | None = None
    problem: str = ""


@dataclass(frozen=True)
class FeedQueueInfo:
    """GET /api/orders/feed/config: the configuration plus VTEX's own view of the queue."""

    raw: dict
    quantity: int | None
    oldest_age_seconds: float | None


@dataclass(frozen=True)
class Receipt:
    """VTEX's answer to an invoice, tracking or cancel call: {"date", "orderId", "receipt"}."""

    receipt: str
    date: str
    call: Call = field(compare=False)


@dataclass(frozen=True)
class OrderDocument:
    order_id: str
    status: str
    raw: dict
    call: Call = field(compare=False)


def parse_vtex_time(value: Any) -> datetime | None:
    """VTEX sends ISO 8601 with up to 7 fractional digits; Python 3.11 takes them (truncated to µs)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After may be seconds or an HTTP date (VTEX does not say which: accept both)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def parse_feed_item(raw: Any) -> FeedItem:
    """Keep every item; flag the ones without an order id or state (nothing can be done for those)."""
    if not isinstance(raw, dict):
        return FeedItem(raw=raw, problem="item is not a JSON object")
    handle = raw.get("handle") if isinstance(raw.get("handle"), str) else ""
    text = {key: raw.get(key) if isinstance(raw.get(key), str) else "" for key in
            ("eventId", "orderId", "state", "lastState", "domain")}
    missing = [key for key in ("orderId", "state") if not text[key].strip()]
    problem = ""
    if missing:
        problem = "missing or empty: " + ", ".join(missing)
    if not handle:
        problem = (problem + "; " if problem else "") + "no handle to commit"
    return FeedItem(
        raw=raw,
        handle=handle,
        event_id=text["eventId"].strip()[:100],
        order_id=text["orderId"].strip()[:100],
        state=text["state"].strip()[:60],
        last_state=text["lastState"].strip()[:60],
        domain=text["domain"].strip()[:50],
        last_change=parse_vtex_time(raw.get("lastChange")),
        current_change=parse_vtex_time(raw.get("currentChange")),
        problem=problem,
    )


def order_path(order_id: str) -> str:
    """/api/oms/pvt/orders/{orderId} with the id as one opaque segment: no id can reach another endpoint."""
    segment = quote(order_id, safe="")
    if not segment or segment in (".", ".."):
        # quote() leaves dots alone, and HTTP clients resolve "." and ".." segments; an empty id is the list endpoint.
        raise VtexError(f"not a usable order id: {order_id!r}")
    return f"/api/oms/pvt/orders/{segment}"


# The metrics' `operation` label: one fixed name per endpoint, so no order id ever becomes a label.
_ORDER = r"/api/oms/pvt/orders/[^/]+"
OPERATIONS = [(method, re.compile(pattern), name) for method, pattern, name in [
    ("GET", r"/api/orders/feed", "feed_read"),
    ("POST", r"/api/orders/feed", "feed_commit"),
    ("GET", r"/api/orders/feed/config", "feed_config_get"),
    ("POST", r"/api/orders/feed/config", "feed_config_set"),
    ("DELETE", r"/api/orders/feed/config", "feed_config_delete"),
    ("GET", r"/api/orders/hook/config", "hook_config_get"),
    ("POST", r"/api/orders/hook/config", "hook_config_set"),
    ("DELETE", r"/api/orders/hook/config", "hook_config_delete"),
    ("GET", r"/api/oms/pvt/orders", "list_orders"),
    ("GET", _ORDER, "get_order"),
    ("POST", _ORDER + "/start-handling", "start_handling"),
    ("POST", _ORDER + "/cancel", "cancel_order"),
    ("POST", _ORDER + "/invoice", "invoice"),
    ("PATCH", _ORDER + r"/invoice/[^/]+", "invoice_update"),
    ("PUT", _ORDER + r"/invoice/[^/]+/tracking", "tracking_update"),
]]


def call_operation(method: str, path: str) -> str:
    """The endpoint a request went to, by name ("other" for one this table does not know)."""
    return next((name for verb, pattern, name in OPERATIONS if verb == method and pattern.fullmatch(path)), "other")


def _lower_keys(data: dict) -> dict:
    return {str(key).lower(): value for key, value in data.items()}


class VtexClient:
    """One VTEX account's Orders API. Not thread-safe: give each thread its own client."""

    def __init__(self, *, base_url: str, app_key: str, app_token: str, timeout: float, store: str = "",
                 before_call: Callable[[str], None] | None = None) -> None:
        """`store`: the store's name, for the call metrics; `before_call(operation)`: run before every request
        with its operation's name (call_operation): the account's rate limiter may wait, or raise
        VtexUnavailable to refuse the call."""
        self.base_url = base_url.rstrip("/")
        self.store = store
        self.before_call = before_call
        self.host = host_of(self.base_url)
        self.timeout = timeout
        self.session = new_session(self.base_url)
        self.session.headers.update(
            {
                "X-VTEX-API-AppKey": app_key,
                "X-VTEX-API-AppToken": app_token,
                "Accept": "application/json",
                "Content-Type": "application/json",
            }
        )

    def close(self) -> None:
        self.session.close()

    def _request(self, method: str, path: str, *, body: Any = None, params: dict | None = None) -> tuple[requests.Response, Call]:
        operation = call_operation(method, path)
        if self.before_call is not None:
            self.before_call(operation)
        started = time.monotonic()
        status = "error"  # what the call metrics count when no HTTP answer comes
        try:
            response = self.session.request(
                method,
                self.base_url + path,
                params=params,
                data=None if body is None else json.dumps(body),
                timeout=self.timeout,
            )
            status = str(response.status_code)
        except requests.RequestException as exc:
            failure, cause = classify_failure(exc, timeout=self.timeout)
            call = Call(method, path, None, int((time.monotonic() - started) * 1000), cause)
            raise VtexUnavailable(f"{method} {path}: {cause} ({self.host})", call=call, host=self.host,
                                  failure=failure, cause=cause) from exc
        finally:
            call_record("vtex", self.store, operation, status, (time.monotonic() - started) * 1000)
        call = Call(method, path, response.status_code, int((time.monotonic() - started) * 1000),
                    response.text[:EXCERPT_CHARS])
        if response.status_code >= 400:
            self._raise_for(response, call, self.host)
        return response, call

    @staticmethod
    def _raise_for(response: requests.Response, call: Call, host: str) -> None:
        code, message = "", response.reason or ""
        try:
            error = response.json().get("error") or {}
            code, message = str(error.get("code") or ""), str(error.get("message") or message)
        except (ValueError, AttributeError):
            pass
        text = f"{call.method} {call.path}: HTTP {response.status_code} {code} {message}".replace("  ", " ").strip()
        if response.status_code == 429:
            raise VtexUnavailable(text, call=call, code=code, host=host,
                                  retry_after=parse_retry_after(response.headers.get("Retry-After")))
        if response.status_code >= 500 or response.status_code == 408:
            raise VtexUnavailable(text, call=call, code=code, host=host)
        raise VtexError(text, call=call, code=code, host=host)

    @staticmethod
    def _json(response: requests.Response, call: Call) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise VtexUnavailable(f"{call.method} {call.path}: HTTP {call.status} with unreadable JSON", call=call) from exc

    def feed_read(self, maxlot: int = 10) -> list[FeedItem]:
        """Retrieve (dequeue) feed items: GET /api/orders/feed?maxlot=N (maxlot <= 10)."""
        response, call = self._request("GET", "/api/orders/feed", params={"maxlot": max(1, min(10, maxlot))})
        data = self._json(response, call)
        if not isinstance(data, list):
            raise VtexUnavailable(f"GET /api/orders/feed: expected a JSON array, got {type(data).__name__}", call=call)
        return [parse_feed_item(raw) for raw in data]

    def feed_commit(self, handles: list[str]) -> Call:
        """Commit (delete) read items: POST /api/orders/feed {"handles": [...]}."""
        _, call = self._request("POST", "/api/orders/feed", body={"handles": handles})
        return call

    def feed_config_get(self) -> FeedQueueInfo:
        """GET /api/orders/feed/config; keys are read case-insensitively (VTEX's casing varies)."""
        response, call = self._request("GET", "/api/orders/feed/config")
        data = self._json(response, call)
        if not isinstance(data, dict):
            raise VtexUnavailable("GET /api/orders/feed/config: expected a JSON object", call=call)
        lowered = _lower_keys(data)
        age = lowered.get("approximateageofoldestmessageinseconds", lowered.get("aproximateageofoldestmessageinseconds"))
        quantity = lowered.get("quantity")
        return FeedQueueInfo(
            raw=data,
            quantity=int(quantity) if isinstance(quantity, (int, float)) else None,
            oldest_age_seconds=float(age) if isinstance(age, (int, float)) else None,
        )

    def feed_config_set(self, config: dict) -> Call:
        """Create or replace the feed configuration: POST /api/orders/feed/config."""
        _, call = self._request("POST", "/api/orders/feed/config", body=config)
        return call

    def order_get(self, order_id: str) -> OrderDocument:
        """Get order: GET /api/oms/pvt/orders/{orderId}."""
        response, call = self._request("GET", order_path(order_id))
        data = self._json(response, call)
        if not isinstance(data, dict) or not isinstance(data.get("status"), str):
            raise VtexUnavailable(f"GET order {order_id}: answer has no status", call=call)
        return OrderDocument(order_id=str(data.get("orderId") or order_id), status=data["status"], raw=data, call=call)

    def order_start_handling(self, order_id: str) -> Call:
        """Start handling: POST /api/oms/pvt/orders/{orderId}/start-handling (204 = done)."""
        _, call = self._request("POST", order_path(order_id) + "/start-handling")
        if call.status != 204:
            # VTEX: "validate this response to retry the call if the response differs from 204".
            raise VtexUnavailable(f"start-handling {order_id}: HTTP {call.status}, expected 204", call=call)
        return call

    # --- the return path: what the ERP decided, carried to VTEX (ORDERS-API.md §4) ---------------------------
    def order_invoice(self, order_id: str, invoice: dict) -> Receipt:
        """Order invoice notification: POST /api/oms/pvt/orders/{orderId}/invoice. Sending the same invoice
        number again is safe: VTEX answers with a new receipt and changes nothing."""
        return self._receipt("POST", order_path(order_id) + "/invoice", invoice)

    def invoice_tracking_update(self, order_id: str, invoice_number: str, tracking: dict) -> Receipt:
        """Update order's partial invoice (tracking): PATCH /api/oms/pvt/orders/{orderId}/invoice/{invoiceNumber}."""
        return self._receipt("PATCH", f"{order_path(order_id)}/invoice/{quote(invoice_number, safe='')}", tracking)

    def order_cancel(self, order_id: str, reason: str) -> Receipt:
        """Cancel order: POST /api/oms/pvt/orders/{orderId}/cancel (a canceled order answers 200 again)."""
        return self._receipt("POST", order_path(order_id) + "/cancel", {"reason": reason})

    def _receipt(self, method: str, path: str, body: dict) -> Receipt:
        response, call = self._request(method, path, body=body)
        data = self._json(response, call)
        if not isinstance(data, dict) or not data.get("receipt"):
            raise VtexUnavailable(f"{method} {path}: HTTP {call.status} without a receipt", call=call)
        return Receipt(receipt=str(data["receipt"])[:100], date=str(data.get("date") or ""), call=call)

    def hook_config_get(self) -> dict:
        """GET /api/orders/hook/config (answer undocumented: the stored config, which holds the hook's headers)."""
        response, call = self._request("GET", "/api/orders/hook/config")
        data = self._json(response, call)
        if not isinstance(data, dict):
            raise VtexUnavailable("GET /api/orders/hook/config: expected a JSON object", call=call)
        return data

    def hook_config_set(self, config: dict) -> Call:
        """Create or replace the hook: POST /api/orders/hook/config (VTEX pings hook.url first; not 200 -> 400)."""
        _, call = self._request("POST", "/api/orders/hook/config", body=config)
        return call

    def hook_config_delete(self) -> Call:
        """Delete the hook: DELETE /api/orders/hook/config."""
        _, call = self._request("DELETE", "/api/orders/hook/config")
        return call

    def order_list(self, *, status: str, page: int = 1, per_page: int = 100, created_from: datetime | None = None,
                   created_to: datetime | None = None, order_by: str = "creationDate,desc") -> OrderListPage:
        """List orders: GET /api/oms/pvt/orders?f_status=..&page=..&per_page=.. (ORDERS-API.md §3, "Related").

        https://developers.vtex.com/docs/api-reference/orders-api#get-/api/oms/pvt/orders . VTEX's index lags about
        4 minutes and it says not to integrate on this endpoint: a safety net only, read sparingly.
        """
        params: dict[str, Any] = {"f_status": status, "page": max(1, min(LIST_MAX_PAGES, page)),
                                  "per_page": max(1, min(LIST_MAX_PER_PAGE, per_page)), "orderBy": order_by}
        if created_from is not None or created_to is not None:
            params["f_creationDate"] = creation_date_range(created_from, created_to)
        response, call = self._request("GET", "/api/oms/pvt/orders", params=params)
        return parse_order_list(self._json(response, call), call)


# --- List orders (VtexClient.order_list) ----------------------------------------------------------------------

LIST_MAX_PER_PAGE = 100  # "it goes up to 100 orders per page" (spec)
LIST_MAX_PAGES = 30  # "the limit of retrieval of this endpoint is 30 pages" (spec)
LIST_OLDEST_SECONDS = 730 * 86400  # "only orders created in the last two years" (spec)


@dataclass(frozen=True)
class ListedOrder:
    """One row of List orders. VTEX's example has no `lastChange`; it is read when present."""

    order_id: str
    status: str
    creation_date: datetime | None
    authorized_date: datetime | None = None
    last_change: datetime | None = None


@dataclass(frozen=True)
class OrderListPage:
    """One page of List orders and VTEX's `paging` (total orders, pages, this page, its size)."""

    orders: list[ListedOrder]
    total: int
    pages: int
    current_page: int
    per_page: int
    call: Call = field(compare=False)


def _vtex_range_time(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def creation_date_range(start: datetime | None, end: datetime | None) -> str:
    """f_creationDate as VTEX documents it: `creationDate:[2022-01-01T02:00:00.000Z TO 2022-01-02T01:59:59.999Z]`."""
    end = end or datetime.now(timezone.utc)
    # Both ends are required by the syntax; VTEX keeps two years.
    start = start or datetime.fromtimestamp(end.timestamp() - LIST_OLDEST_SECONDS, timezone.utc)
    return f"creationDate:[{_vtex_range_time(start)} TO {_vtex_range_time(end)}]"


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def parse_order_list(data: Any, call: Call) -> OrderListPage:
    """Rows without an orderId are left out (nothing can be done for them); a body without `list` is a failed read."""
    if not isinstance(data, dict) or not isinstance(data.get("list"), list):
        raise VtexUnavailable("GET /api/oms/pvt/orders: expected an object with a `list` array", call=call)
    orders = [
        ListedOrder(order_id=row["orderId"].strip()[:100], status=str(row.get("status") or "")[:60],
                    creation_date=parse_vtex_time(row.get("creationDate")),
                    authorized_date=parse_vtex_time(row.get("authorizedDate")),
                    last_change=parse_vtex_time(row.get("lastChange")))
        for row in data["list"]
        if isinstance(row, dict) and isinstance(row.get("orderId"), str) and row["orderId"].strip()
    ]
    paging = data.get("paging") if isinstance(data.get("paging"), dict) else {}
    current = _int_or(paging.get("currentPage"), 1)
    return OrderListPage(orders=orders, total=_int_or(paging.get("total"), len(orders)),
                         pages=_int_or(paging.get("pages"), current), current_page=current,
                         per_page=_int_or(paging.get("perPage"), len(orders)), call=call)
