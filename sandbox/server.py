"""A local VTEX Orders API + ERP receiver over real HTTP, for tests, demos and benchmarks.

One `Sandbox` is one VTEX account seen through one appKey (so one feed, one hook) plus a fake ERP.
All state sits behind one lock; sleeps (latency, "timeout" faults) and slow work (JSON parsing, hook
pings, hook notifications: see hook_delivery.py) happen outside it. No Django here: tests can import
this module without settings.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, defaultdict, deque
from typing import Any

from sandbox.erp import ErpReceiver
from sandbox.faults import (
    ACT_THEN_SLEEP,
    JSON_ROUTES,
    ROUTES,
    ScriptedFault,
    json_response,
    rate_limited,
    scripted_response,
    truncated,
    unavailable,
)
from sandbox.feed import FeedConfig, FeedQueue, default_feed_config, parse_feed_config
from sandbox.handler import SandboxHTTPServer
from sandbox.hook import HookConfig
from sandbox.hook_delivery import HookNotifier
from sandbox.hook_side import HookSide
from sandbox.orders import OrderFactory, OrderRecord, given_line
from sandbox.post_sale import PostSaleActions
from sandbox.records import ErpDelivery, HookDelivery, RecordedRequest, Response
from sandbox.routes import Call, RouteActions
from sandbox.routing import Route, allowed_methods, match_route
from sandbox.timestamps import iso_z

__all__ = ["Sandbox", "RecordedRequest", "ErpDelivery", "HookDelivery"]

DEFAULT_TIMEOUT_FAULT_SECONDS = 5.0
# A new order reached its status this long after its previous change (window-to-cancel): VTEX's feed example
# shows 22 s between lastChange and currentChange. Fixed, so a seed still gives the same data.
PREVIOUS_CHANGE_SECONDS = 20.0
# faults.ROUTES predates List orders; scripted and random faults reach it too.
FAULT_ROUTES = ROUTES | {"order_list"}
FAULT_JSON_ROUTES = JSON_ROUTES | {"order_list"}


def _check_items(items: Any) -> None:
    """Refuse bad `items` before anything is drawn or stored (ValueError, a 400 on /_sandbox/orders)."""
    if items is None:
        return
    if not isinstance(items, list) or not items:
        raise ValueError("items must be a non-empty list")
    for raw in items:
        given_line(raw)


class Sandbox(HookSide, PostSaleActions, RouteActions):
    def __init__(
        self,
        *,
        account: str = "sandbox",
        app_key: str = "vtexappkey-sandbox-HUB",
        app_token: str = "sandbox-token",
        latency_ms: float = 0,
        fault_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        retry_after_seconds: int | None = 1,
        broken_json_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        commit_fault_rate: float = 0.0,
        shuffle: bool = True,
        seed: int | None = None,
        feed_configured: bool = True,
        visibility_timeout: int = 250,
        hook_drop_rate: float = 0.0,
        hook_delay_ms: float = 0,
        hook_duplicate_rate: float = 0.0,
        hook_retry_base_seconds: float = 1.0,
        hook_max_attempts: int = 10,
    ) -> None:
        self.account, self.app_key, self.app_token = account, app_key, app_token
        # Knobs are plain attributes: tests and /_sandbox/faults may change them while serving.
        self.latency_ms = latency_ms
        self.fault_rate = fault_rate
        self.rate_limit_rate = rate_limit_rate
        self.retry_after_seconds = retry_after_seconds
        self.broken_json_rate = broken_json_rate
        self.duplicate_rate = duplicate_rate
        self.commit_fault_rate = commit_fault_rate  # share of feed commits answered 503, on top of fault_rate
        self.shuffle = shuffle
        # Hook notifications: dropped (never sent, so tests can prove the feed catches it), delayed, or sent twice.
        self.hook_drop_rate = hook_drop_rate
        self.hook_delay_ms = hook_delay_ms
        self.hook_duplicate_rate = hook_duplicate_rate
        # Changes of these orders never reach the feed (the hook has hook_drop_rate): an event lost for good,
        # for tests of what finds such orders (List orders, reconciliation).
        self.drop_feed_events_for: set[str] = set()
        self.feed_dropped = 0
        self.clock = time.time  # swap in tests to jump past visibility timeouts or retention
        self._lock = threading.Lock()
        self._rng = random.Random(seed)  # fault decisions only, so data stays the same whatever the faults
        data_rng = random.Random(None if seed is None else seed + 1)
        self._data_rng = data_rng  # event ids, handles, receipts, shuffling
        self._hook_rng = random.Random(None if seed is None else seed + 2)  # hook knobs leave other draws alone
        self._factory = OrderFactory(seed)
        self._orders: dict[str, OrderRecord] = {}
        self._status_counts: Counter[str] = Counter()
        self._queue = FeedQueue(data_rng)
        self._feed: FeedConfig | None = default_feed_config(visibility_timeout) if feed_configured else None
        self._erp = ErpReceiver()
        self._scripted: dict[str, deque[ScriptedFault]] = defaultdict(deque)
        self._hook: HookConfig | None = None
        self._hooks = HookNotifier(retry_base_seconds=hook_retry_base_seconds, max_attempts=hook_max_attempts)
        self.requests: list[RecordedRequest] = []
        self.start_handling_calls: list[tuple[str, int]] = []
        self.committed_handles: list[str] = []
        self.url = ""
        self.erp_url = ""
        self._httpd: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Sandbox:
        """Serve in a daemon thread; port 0 picks a free port. Returns self."""
        self._stopped.clear()
        self._hooks.open()
        self._httpd = SandboxHTTPServer((host, port), self)
        bound_host, bound_port = self._httpd.server_address[:2]
        shown = "127.0.0.1" if bound_host in ("0.0.0.0", "") else bound_host
        self.url = f"http://{shown}:{bound_port}"
        self.erp_url = f"{self.url}/erp/orders"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"vtex-sandbox-{bound_port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self, host: str = "127.0.0.1", port: int = 8765) -> None:
        """Block until stop() (e.g. from a SIGTERM handler) or Ctrl-C."""
        if self._httpd is None:
            self.start(host, port)
        try:
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        self._stopped.set()
        self._hooks.close()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def start_trickle(self, per_minute: float) -> None:
        """Keep creating ready-for-handling orders at this pace until stop(): a live demo."""
        if per_minute <= 0:
            return

        def trickle() -> None:
            while not self._stopped.wait(60.0 / per_minute):
                self.create_order()

        threading.Thread(target=trickle, name="vtex-sandbox-trickle", daemon=True).start()

    def __enter__(self) -> Sandbox:
        return self if self._httpd is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- orders and feed (Python API) ----------------------------------------------------------------

    @property
    def feed_config(self) -> dict[str, Any] | None:
        """The feed configuration as stored (request shape), or None."""
        return None if self._feed is None else json.loads(json.dumps(self._feed.stored))

    @feed_config.setter
    def feed_config(self, value: dict[str, Any] | None) -> None:
        config = None if value is None else parse_feed_config(value)
        with self._lock:
            self._feed = config

    @property
    def erp_deliveries(self) -> list[ErpDelivery]:
        return self._erp.deliveries

    def create_order(self, *, status: str = "ready-for-handling", order_id: str | None = None,
                     items: list[dict[str, Any]] | None = None) -> str:
        """Create an order that just reached `status`; emits one feed event (lastState window-to-cancel).

        `items` ([{"id": SKU id, "price": cents, "quantity": n}]) replaces the random items, without freight:
        e.g. SKU "123" for VTEX's example invoice.
        """
        _check_items(items)
        now = self.clock()
        with self._lock:
            return self._create_locked(status=status, order_id=order_id, now=now, items=items)

    def create_orders(self, n: int, *, status: str = "ready-for-handling",
                      items: list[dict[str, Any]] | None = None) -> list[str]:
        _check_items(items)
        order_ids: list[str] = []
        while len(order_ids) < n:
            now = self.clock()
            # Small batches: building an order takes ~0.4 ms, and clients must not wait for all 2,000.
            with self._lock:
                for _ in range(min(100, n - len(order_ids))):
                    order_ids.append(self._create_locked(status=status, order_id=None, now=now, items=items))
        return order_ids

    def set_status(self, order_id: str, status: str) -> dict[str, Any]:
        """Move an order; returns the feed event, or {} when the feed filter (or no feed) left it out."""
        now = self.clock()
        with self._lock:
            return self._move(self._get(order_id), status, now)

    def order(self, order_id: str) -> dict[str, Any]:
        with self._lock:
            return self._get(order_id).copy()

    def enqueue_event(self, *, order_id: str, state: str, last_state: str = "window-to-cancel",
                      event_id: str | None = None, current_change: str | None = None) -> dict[str, Any]:
        """Enqueue a feed item as is (no filter, no duplicate_rate), e.g. to replay an eventId."""
        now = self.clock()
        with self._lock:
            record = self._orders.get(order_id)
            item = {
                "eventId": event_id or self._event_id(),
                "domain": "Fulfillment",
                "state": state,
                "lastState": last_state,
                "orderId": order_id,
                "lastChange": iso_z(record.last_change if record else now),
                "currentChange": current_change or iso_z(now),
            }
            self._queue.put(item, now)
            return dict(item)

    def enqueue_raw(self, item: dict[str, Any]) -> None:
        """Enqueue anything, even a malformed item; it still gets a fresh handle on each read."""
        now = self.clock()
        with self._lock:
            self._queue.put(dict(item), now)

    def queue_size(self) -> int:
        """Messages not yet committed, visible or not."""
        with self._lock:
            self._expire(self.clock())
            return len(self._queue)

    def make_all_visible(self) -> None:
        with self._lock:
            self._queue.make_all_visible()

    def fail_next(self, route: str, status: int | str, *, times: int = 1, headers: dict[str, str] | None = None,
                  body: str | bytes | None = None, delay_seconds: float = 0) -> None:
        """Script the next `times` answers of `route` (see FAULT_ROUTES); "timeout" sleeps 5 s by default."""
        if route not in FAULT_ROUTES:
            raise ValueError(f"unknown route {route!r}; expected one of {sorted(FAULT_ROUTES)}")
        if status == "timeout" and not delay_seconds:
            delay_seconds = DEFAULT_TIMEOUT_FAULT_SECONDS
        fault = ScriptedFault(status=status, times=times, headers=headers, body=body, delay_seconds=delay_seconds)
        with self._lock:
            self._scripted[route].append(fault)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._expire(self.clock())
            return {
                "orders": {status: n for status, n in sorted(self._status_counts.items()) if n},
                "queue": len(self._queue),  # uncommitted messages, visible or hidden by a read
                "queue_hidden": self._queue.hidden(self.clock()),
                "feed_dropped": self.feed_dropped,
                "erp_deliveries": len(self._erp.deliveries),
                "erp_unique_keys": self._erp.unique_keys,
                "erp_orders": self._erp.unique_orders,
                "start_handling_204": sum(1 for _, status in self.start_handling_calls if status == 204),
                "requests": len(self.requests),
                # notifications (sent or dropped), attempts, delivered, dropped, gave_up, pending
                **{f"hook_{name}": n for name, n in self._hooks.counts().items()},
            }

    # ---- state helpers (call with the lock held) -----------------------------------------------------

    def _get(self, order_id: str) -> OrderRecord:
        try:
            return self._orders[order_id]
        except KeyError:
            raise KeyError(f"unknown order {order_id!r}") from None

    def _event_id(self) -> str:
        return f"{self._data_rng.getrandbits(128):032X}"

    def _expire(self, now: float) -> None:
        if self._feed is not None:
            self._queue.expire(now, self._feed.retention)

    def _create_locked(self, *, status: str, order_id: str | None, now: float,
                       items: list[dict[str, Any]] | None = None) -> str:
        if order_id is None:
            order_id = self._factory.next_order_id()
            while order_id in self._orders:  # a caller may have picked this id by hand
                order_id = self._factory.next_order_id()
        elif order_id in self._orders:
            raise ValueError(f"order {order_id!r} already exists")
        previous = now - PREVIOUS_CHANGE_SECONDS
        record = self._factory.build(order_id=order_id, status=status, now=previous, items=items)
        record.set_status(status, now)
        self._orders[order_id] = record
        self._status_counts[status] += 1
        # Only the change that reached `status` is emitted, not the chain of earlier states; its lastChange is
        # when the order entered window-to-cancel, as on VTEX (never equal to currentChange).
        self._emit(record, state=status, last_state="window-to-cancel", last_change=previous, now=now)
        return order_id

    def _move(self, record: OrderRecord, status: str, now: float) -> dict[str, Any]:
        old_status, last_change = record.status, record.last_change
        self._status_counts[old_status] -= 1
        self._status_counts[status] += 1
        record.set_status(status, now)
        return self._emit(record, state=status, last_state=old_status, last_change=last_change, now=now)

    def _emit(self, record: OrderRecord, *, state: str, last_state: str, last_change: float,
              now: float) -> dict[str, Any]:
        # Feed and hook are independent configurations: each change is offered to both.
        self._notify_hook(record, state=state, last_state=last_state, last_change=last_change, now=now)
        # No feed configured, no event: a new feed only captures changes made after it exists.
        if self._feed is None or not self._feed.filter.matches(order_id=record.order_id, state=state, doc=record.doc):
            return {}
        if record.order_id in self.drop_feed_events_for:
            self.feed_dropped += 1
            return {}
        item = {
            "eventId": self._event_id(),
            "domain": "Fulfillment",
            "state": state,
            "lastState": last_state,
            "orderId": record.order_id,
            "lastChange": iso_z(last_change),
            "currentChange": iso_z(now),
        }
        self._queue.put(item, now)
        if self.duplicate_rate and self._rng.random() < self.duplicate_rate:
            self._queue.put(dict(item), now)  # SQS is at-least-once: the same eventId can arrive twice
        return dict(item)

    # ---- request pipeline ----------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one HTTP request (called by the handler thread); headers have lower-case names."""
        at = time.time()
        call = Call.parse(method, raw_path, headers, body)
        route = match_route(method, call.path)
        if route is not None and route.kind == "control":
            return self._control(route, call)  # test plumbing: no auth, latency, faults or recording
        if route is None and (allowed := allowed_methods(call.path)):
            # Not recorded: `requests` is API traffic, and a probe such as connect_store's HEAD of the ERP URL
            # is none (before the 405, the stdlib answered such methods without reaching the sandbox).
            return self.method_not_allowed(call, allowed)
        response, sleep_after = self._answer(route, call)
        with self._lock:
            self.requests.append(RecordedRequest(method=method, path=call.path, query=call.query,
                                                 headers=headers, body=body, status=response.status, at=at))
            if route is not None and route.name == "start_handling" and response.status != 401:
                self.start_handling_calls.append((route.order_id, response.status))
        if sleep_after:
            time.sleep(sleep_after)
        return response

    def _answer(self, route: Route | None, call: Call) -> tuple[Response, float]:
        """The response, and how long to sleep after recording it (a "timeout" that already acted)."""
        if route is None:
            return self.not_found(call), 0.0
        if route.name == "erp_list":  # inspection helper: no latency or faults
            with self._lock:
                return json_response(200, self._erp.summaries()), 0.0
        if self.latency_ms > 0:
            time.sleep(self.latency_ms / 1000)
        if route.kind == "vtex" and not self._authorized(call.headers):
            return self.unauthorized(), 0.0
        with self._lock:
            fault = self._take_scripted(route.name)
        if fault is not None:
            return self._play_scripted(route, call, fault)
        return self._random_fault(route, call) or self.act(route, call), 0.0

    def _authorized(self, headers: dict[str, str]) -> bool:
        return (headers.get("x-vtex-api-appkey") == self.app_key
                and headers.get("x-vtex-api-apptoken") == self.app_token)

    def _take_scripted(self, route_name: str) -> ScriptedFault | None:
        faults = self._scripted.get(route_name)
        if not faults:
            return None
        fault = faults[0]
        fault.times -= 1
        if fault.times <= 0:
            faults.popleft()
        return fault

    def _play_scripted(self, route: Route, call: Call, fault: ScriptedFault) -> tuple[Response, float]:
        if fault.status == "timeout":
            if route.name in ACT_THEN_SLEEP:
                return self.act(route, call), fault.delay_seconds
            time.sleep(fault.delay_seconds)
            return self.act(route, call), 0.0
        if fault.delay_seconds:
            time.sleep(fault.delay_seconds)
        if fault.status == "broken_json":
            return Response(200, truncated(self.preview(route, call)), dict(fault.headers or {})), 0.0
        return scripted_response(route.name, fault, self.retry_after_seconds), 0.0

    def _random_fault(self, route: Route, call: Call) -> Response | None:
        """Decided before acting, so a random fault never changes state."""
        if route.name not in FAULT_ROUTES:
            return None
        with self._lock:
            rng = self._rng
            # Drawn only when set: at 0, a seed gives the same faults as before the knob existed.
            commit_failed = (route.name == "feed_commit" and bool(self.commit_fault_rate)
                             and rng.random() < self.commit_fault_rate)
            rate_limited_now = (not commit_failed and bool(self.rate_limit_rate)
                                and rng.random() < self.rate_limit_rate)
            failed_now = commit_failed or (not rate_limited_now and bool(self.fault_rate)
                                           and rng.random() < self.fault_rate)
            broken_now = (not rate_limited_now and not failed_now and route.name in FAULT_JSON_ROUTES
                          and bool(self.broken_json_rate) and rng.random() < self.broken_json_rate)
        if rate_limited_now:
            if route.name == "erp":
                headers = {} if self.retry_after_seconds is None else {"Retry-After": str(self.retry_after_seconds)}
                return json_response(429, {"error": "Too many requests"}, headers)
            return rate_limited(self.retry_after_seconds)
        if failed_now:
            return json_response(503, {"error": "Service unavailable"}) if route.name == "erp" else unavailable()
        if broken_now:
            return Response(200, truncated(self.preview(route, call)))
        return None
