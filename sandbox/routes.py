"""What each route does when no fault gets in the way: VTEX Orders API, ERP receiver, control endpoints.

`RouteActions` is mixed into `Sandbox` and works on its state; every state access takes `self._lock`.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from sandbox.erp import ErpReceiver, ErpRequestError, parse_erp_request
from sandbox.faults import (
    NOT_READY_FOR_HANDLING,
    RECEIPT_ROUTES,
    UNAUTHORIZED,
    ScriptedFault,
    json_response,
    vtex_error,
)
from sandbox.feed import ConfigError, FeedConfig, FeedQueue, parse_feed_config
from sandbox.hook import HookConfig, parse_hook_config, ping
from sandbox.hook_delivery import HookNotifier
from sandbox.invoices import PostSaleError
from sandbox.orders import ListQuery, ListQueryError, OrderRecord, list_orders
from sandbox.records import Response
from sandbox.routing import Route
from sandbox.timestamps import iso_offset

if TYPE_CHECKING:
    from collections.abc import Callable

KNOBS = {"latency_ms", "fault_rate", "commit_fault_rate", "rate_limit_rate", "broken_json_rate", "duplicate_rate",
         "retry_after_seconds", "shuffle", "erp_refuse_customer_data", "hook_drop_rate", "hook_delay_ms",
         "hook_duplicate_rate", "hook_retry_base_seconds", "hook_max_attempts", "drop_feed_events_for"}
BOOLEAN_KNOBS = {"shuffle", "erp_refuse_customer_data"}
INTEGER_KNOBS = {"retry_after_seconds", "hook_max_attempts"}
ORDER_ID_KNOBS = {"drop_feed_events_for"}  # a list of order ids
# VTEX's default lot is undocumented and its spec marks `maxlot` required, yet VTEX's own C# consumer sends none
# and reads a batch of exactly 10 as "more may be waiting" (ORDERS-API.md §1.5): so 10, the documented maximum.
DEFAULT_MAXLOT = 10


class BadRequest(Exception):
    pass


@dataclass(frozen=True)
class Call:
    """One incoming request, parsed once."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @classmethod
    def parse(cls, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Call:
        parts = urlsplit(raw_path)
        query = {key: values[0] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        return cls(method=method, path=parts.path, query=query, headers=headers, body=body)

    def json(self, *, allow_empty: bool = False) -> Any:
        if allow_empty and not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except ValueError:
            raise BadRequest("body must be JSON") from None


def bad_request(message: str) -> Response:
    return vtex_error(400, "400", message)


def config_error(exc: ConfigError) -> Response:
    return vtex_error(exc.status, str(exc.status), exc.message)


class RouteActions:
    # Provided by Sandbox.
    _lock: threading.Lock
    _orders: dict[str, OrderRecord]
    _status_counts: Counter[str]
    _queue: FeedQueue
    _feed: FeedConfig | None
    _erp: ErpReceiver
    _data_rng: random.Random
    _scripted: dict[str, deque[ScriptedFault]]
    _hook: HookConfig | None
    _hooks: HookNotifier
    committed_handles: list[str]
    shuffle: bool
    clock: Callable[[], float]
    _expire: Callable[[float], None]
    _move: Callable[[OrderRecord, str, float], dict[str, Any]]
    create_orders: Callable[..., list[str]]
    set_status: Callable[[str, str], dict[str, Any]]
    fail_next: Callable[..., None]
    stats: Callable[[], dict[str, Any]]
    order_summary: Callable[[str], dict[str, Any]]

    @property
    def erp_refuse_customer_data(self) -> bool:
        """The ERP refuses every order.ready with 422, quoting the customer's e-mail, document and phone."""
        return self._erp.refuse_with_customer_data

    @erp_refuse_customer_data.setter
    def erp_refuse_customer_data(self, value: bool) -> None:
        with self._lock:
            self._erp.refuse_with_customer_data = bool(value)

    def act(self, route: Route, call: Call) -> Response:
        action = getattr(self, f"_do_{route.name}")
        try:
            return action(route, call)
        except BadRequest as exc:
            return json_response(400, {"error": str(exc)}) if route.kind == "erp" else bad_request(str(exc))
        except ConfigError as exc:
            return config_error(exc)
        except PostSaleError as exc:
            return vtex_error(exc.status, exc.code, exc.message)

    @staticmethod
    def not_found(call: Call) -> Response:
        return vtex_error(404, "404", f"No route for {call.method} {call.path}")

    @staticmethod
    def method_not_allowed(call: Call, allowed: list[str]) -> Response:
        return vtex_error(405, "405", f"Method {call.method} not allowed on {call.path}",
                          {"Allow": ", ".join(allowed)})

    @staticmethod
    def unauthorized() -> Response:
        return json_response(401, UNAUTHORIZED)

    # ---- feed ------------------------------------------------------------------------------------

    def _config_view(self) -> Response:
        """GET feed/config body; call with the lock held."""
        if self._feed is None:
            return vtex_error(404, "404", "Feed configuration not found")
        now = self.clock()
        self._expire(now)
        stored = self._feed.stored
        return json_response(200, {
            "filter": stored["filter"],
            # VTEX answers with a lower-case `m`, though the request field starts with `M`.
            "queue": {"visibilityTimeoutInSeconds": self._feed.visibility,
                      "messageRetentionPeriodInSeconds": self._feed.retention},
            "quantity": len(self._queue),
            "approximateAgeOfOldestMessageInSeconds": self._queue.oldest_age(now),
        })

    def _do_feed_config_get(self, route: Route, call: Call) -> Response:
        with self._lock:
            return self._config_view()

    def _do_feed_config_set(self, route: Route, call: Call) -> Response:
        config = parse_feed_config(call.json())  # compiles JSONata outside the lock
        with self._lock:
            # Reconfiguring keeps queued messages, as VTEX does.
            self._feed = config
        return Response(200)

    def _do_feed_config_delete(self, route: Route, call: Call) -> Response:
        with self._lock:
            if self._feed is None:
                return vtex_error(404, "404", "Feed configuration not found")
            self._feed = None
        return Response(200)

    @staticmethod
    def _maxlot(call: Call) -> int:
        raw = call.query.get("maxlot")
        if raw is None:
            return DEFAULT_MAXLOT
        if not raw.isdigit() or not 1 <= int(raw) <= 10:
            raise BadRequest("maxlot must be an integer between 1 and 10")
        return int(raw)

    def _do_feed_read(self, route: Route, call: Call) -> Response:
        with self._lock:
            if self._feed is None:
                return vtex_error(404, "404", "Feed configuration not found")
        maxlot = self._maxlot(call)
        now = self.clock()
        with self._lock:
            if self._feed is None:
                return vtex_error(404, "404", "Feed configuration not found")
            self._expire(now)
            items = self._queue.read(maxlot, now, visibility=self._feed.visibility, shuffle=self.shuffle)
        return json_response(200, items)

    def _do_feed_commit(self, route: Route, call: Call) -> Response:
        payload = call.json()
        handles = payload.get("handles") if isinstance(payload, dict) else None
        if not isinstance(handles, list):
            raise BadRequest("handles must be a list")
        with self._lock:
            # Unknown or stale handles are ignored: VTEX's behaviour is undocumented, so we stay lenient.
            self._queue.commit(handles)
            self.committed_handles.extend(h for h in handles if isinstance(h, str))
        return Response(200)

    # ---- orders ----------------------------------------------------------------------------------

    @staticmethod
    def _order_not_found() -> Response:
        return vtex_error(404, "OMS002", "Order not found")  # shape undocumented; our choice

    def _do_order_list(self, route: Route, call: Call) -> Response:
        try:
            query = ListQuery.parse(call.query)
        except ListQueryError as exc:
            raise BadRequest(str(exc)) from None
        with self._lock:
            answer = list_orders(self._orders.values(), query)
        return json_response(200, answer)

    def _do_order_get(self, route: Route, call: Call) -> Response:
        with self._lock:
            record = self._orders.get(route.order_id)
            if record is None:
                return self._order_not_found()
            return Response(200, record.to_json())

    def _do_start_handling(self, route: Route, call: Call) -> Response:
        now = self.clock()
        with self._lock:
            record = self._orders.get(route.order_id)
            if record is None:
                return self._order_not_found()
            if record.status != "ready-for-handling":
                return json_response(409, NOT_READY_FOR_HANDLING)
            # VTEX passes through "start-handling" to "handling": a feed or hook filtered on either one fires.
            self._move(record, "start-handling", now)
            self._move(record, "handling", max(self.clock(), now + 0.0001))
        return Response(204)

    # ---- hook ------------------------------------------------------------------------------------

    def _do_hook_config_get(self, route: Route, call: Call) -> Response:
        with self._lock:
            if self._hook is None:
                return vtex_error(404, "404", "Hook configuration not found")
            return json_response(200, self._hook.stored)

    def _do_hook_config_set(self, route: Route, call: Call) -> Response:
        config = parse_hook_config(call.json())  # compiles JSONata outside the lock
        # The ping runs outside the lock: the endpoint may take up to 5 s to answer.
        failure = ping(config.url, config.headers)
        if failure is not None:
            return bad_request(f"Hook ping failed: {failure}")
        with self._lock:
            self._hook = config
        return Response(200)

    def _do_hook_config_delete(self, route: Route, call: Call) -> Response:
        with self._lock:
            if self._hook is None:
                return vtex_error(404, "404", "Hook configuration not found")
            self._hook = None
        return Response(200)

    # ---- ERP -------------------------------------------------------------------------------------

    def _do_erp(self, route: Route, call: Call) -> Response:
        try:
            key, payload = parse_erp_request(call.headers, call.body)  # parsed outside the lock
        except ErpRequestError as exc:
            return json_response(400, {"error": str(exc)})
        now = self.clock()
        with self._lock:
            return self._erp.accept(key=key, payload=payload, headers=call.headers, now=now)

    # ---- broken JSON previews --------------------------------------------------------------------

    def preview(self, route: Route, call: Call) -> bytes:
        """A plausible body for `route`, computed without changing state, to be truncated."""
        with self._lock:
            if route.name == "feed_read" and self._feed is not None:
                maxlot = call.query.get("maxlot", "10")
                return json.dumps(self._queue.peek(int(maxlot) if maxlot.isdigit() else 10, self.clock())).encode()
            if route.name == "feed_config_get":
                return self._config_view().body
            if route.name == "order_list":
                try:
                    return json.dumps(list_orders(self._orders.values(), ListQuery.parse(call.query))).encode()
                except ListQueryError:
                    pass
            if route.name == "order_get" and route.order_id in self._orders:
                return self._orders[route.order_id].to_json()
            if route.name == "hook_config_get":
                return json.dumps(self._hook.stored if self._hook else {}).encode()
            if route.name in RECEIPT_ROUTES:
                return json.dumps({"date": iso_offset(self.clock()), "orderId": route.order_id,
                                   "receipt": f"{self._data_rng.getrandbits(128):032x}"}).encode()
            if route.name == "erp":
                return b'{"id": "ERP-000000"}'
        return b'{"sandbox": "broken_json", "route": "%s"}' % route.name.encode()

    # ---- control (/_sandbox) ---------------------------------------------------------------------

    def _control(self, route: Route, call: Call) -> Response:
        try:
            payload = call.json(allow_empty=True) if call.method == "POST" else {}
            if not isinstance(payload, dict):
                raise BadRequest("body must be a JSON object")
            return self._control_action(route, payload)
        except (BadRequest, ValueError, TypeError) as exc:
            return json_response(400, {"error": str(exc)})
        except KeyError as exc:
            return json_response(404, {"error": str(exc.args[0]) if exc.args else "not found"})

    def _control_action(self, route: Route, payload: dict[str, Any]) -> Response:
        if route.name == "control_stats":
            return json_response(200, self.stats())
        if route.name == "control_orders":
            count = int(payload.get("count", 1))
            status = str(payload.get("status", "ready-for-handling"))
            # `items` ([{"id", "price", "quantity"}]) gives every new order these items and no freight.
            return json_response(200, {"orderIds": self.create_orders(count, status=status,
                                                                      items=payload.get("items"))})
        if route.name == "control_order":
            return json_response(200, self.order_summary(route.order_id))
        if route.name == "control_status":
            if not isinstance(payload.get("status"), str):
                raise BadRequest("status is required")
            return json_response(200, self.set_status(route.order_id, payload["status"]))
        if route.name == "control_faults":
            unknown = set(payload) - KNOBS
            if unknown:
                raise BadRequest(f"unknown knobs: {sorted(unknown)}")
            for name, value in payload.items():
                if name in ORDER_ID_KNOBS:
                    if not isinstance(value, list) or not all(isinstance(order_id, str) for order_id in value):
                        raise BadRequest(f"{name} must be a list of order ids")
                    value = set(value)
                elif name in INTEGER_KNOBS:
                    value = None if value is None and name == "retry_after_seconds" else int(value)
                elif name in BOOLEAN_KNOBS:
                    value = bool(value)
                else:
                    value = float(value)
                setattr(self, name, value)
            return json_response(200, {name: sorted(value) if isinstance(value := getattr(self, name), set) else value
                                       for name in sorted(KNOBS)})
        if route.name == "control_fail_next":
            if "route" not in payload or "status" not in payload:
                raise BadRequest("route and status are required")
            self.fail_next(payload["route"], payload["status"], times=int(payload.get("times", 1)),
                           headers=payload.get("headers"), body=payload.get("body"),
                           delay_seconds=float(payload.get("delay_seconds", 0)))
            return json_response(200, {"ok": True})
        if route.name == "control_hook_deliveries":
            return json_response(200, [delivery.summary() for delivery in self._hooks.deliveries])
        with self._lock:  # control_deliveries
            return json_response(200, self._erp.summaries())
