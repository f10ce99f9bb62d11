"""The sandbox sends order hook notifications like VTEX: filtered, with the configured headers, retried.

A tiny HTTP receiver on 127.0.0.1 plays the hub's hook endpoint. No Django here either.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from sandbox.server import Sandbox
from tests.sandbox.vtex_client import ISO_7_DIGITS_Z, Vtex, fixture

EXAMPLE = fixture("hook-notification-payload.json")
HEADERS = {"X-Hub-Hook-Token": "hook-secret-1"}


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic()
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.server.record(Received(time.monotonic(), self.path, dict(self.headers), body))
        time.sleep(self.server.sleep_seconds if "hookConfig" not in body else 0)
        self.send_response(self.server.next_status() if "hookConfig" not in body else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class Receiver(ThreadingHTTPServer):
    """The hub's hook endpoint, played by a stdlib server: answers 200 unless told otherwise."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.url = f"http://127.0.0.1:{self.server_port}/hooks/vtex/sandbox/"
        self.statuses: deque[int] = deque()  # answers to the next notifications, then 200
        self.sleep_seconds = 0.0
        self._received: list[Received] = []
        self._lock = threading.Lock()

    def record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    def next_status(self) -> int:
        with self._lock:
            return self.statuses.popleft() if self.statuses else 200

    @property
    def notifications(self) -> list[Received]:
        with self._lock:
            return [r for r in self._received if "hookConfig" not in r.body]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    sb = Sandbox(seed=42, shuffle=False, hook_retry_base_seconds=0.1).start()
    yield sb
    sb.stop()


def configure(sandbox: Sandbox, receiver: Receiver, filter_: dict[str, Any]) -> None:
    """Save the hook through VTEX's API, as the hub does (the sandbox pings the receiver first)."""
    body = {"filter": filter_, "hook": {"url": receiver.url, "headers": HEADERS}}
    response = Vtex(sandbox).request("POST", "/api/orders/hook/config", json=body)
    assert response.status_code == 200, response.text


def states(received: list[Received]) -> list[tuple[str, str]]:
    return [(r.body["OrderId"], r.body["State"]) for r in received]


def test_it_posts_vtexs_payload_with_the_configured_headers(sandbox: Sandbox, receiver: Receiver) -> None:
    configure(sandbox, receiver, {"type": "FromWorkflow", "status": ["ready-for-handling", "start-handling"]})
    order_id = sandbox.create_order()
    assert Vtex(sandbox).start_handling(order_id).status_code == 204

    assert sandbox.wait_for_hooks(5)
    ready, started = sorted(receiver.notifications, key=lambda r: r.body["CurrentChange"])
    for received in (ready, started):
        assert list(received.body) == list(EXAMPLE)  # PascalCase, in VTEX's order
        assert received.path == "/hooks/vtex/sandbox/"
        assert received.headers["X-Hub-Hook-Token"] == "hook-secret-1"
        assert received.headers["Content-Type"] == "application/json"
        assert received.body["Origin"] == {"Account": sandbox.account, "Key": sandbox.app_key}
        assert received.body["Domain"] == "Fulfillment" and received.body["OrderId"] == order_id
        last, current = received.body["LastChange"], received.body["CurrentChange"]
        assert ISO_7_DIGITS_Z.match(last) and ISO_7_DIGITS_Z.match(current)
        assert datetime.fromisoformat(last) < datetime.fromisoformat(current)
    assert (ready.body["State"], ready.body["LastState"]) == ("ready-for-handling", "window-to-cancel")
    assert (started.body["State"], started.body["LastState"]) == ("start-handling", "ready-for-handling")
    assert started.body["LastChange"] == ready.body["CurrentChange"]
    # Four delivery threads: the two may be recorded in either order.
    assert sorted((d.order_id, d.state, d.attempt, d.status, d.outcome) for d in sandbox.hook_deliveries) == [
        (order_id, "ready-for-handling", 1, 200, "delivered"), (order_id, "start-handling", 1, 200, "delivered")]


def test_a_workflow_filter_sends_only_its_statuses(sandbox: Sandbox, receiver: Receiver) -> None:
    configure(sandbox, receiver, {"type": "FromWorkflow", "status": ["handling", "canceled"]})
    handled, canceled = sandbox.create_orders(2)
    vtex = Vtex(sandbox)
    vtex.start_handling(handled)
    vtex.request("POST", f"/api/oms/pvt/orders/{canceled}/cancel", json={"reason": "test"})

    assert sandbox.wait_for_hooks(5)
    assert sorted(states(receiver.notifications)) == sorted([(handled, "handling"), (canceled, "canceled")])


@pytest.mark.parametrize("single_fire_disabled, expected", [(False, 1), (True, 2)])
def test_a_from_orders_filter_evaluates_its_expression_against_the_order(
    sandbox: Sandbox, receiver: Receiver, single_fire_disabled: bool, expected: int
) -> None:
    configure(sandbox, receiver, {"type": "FromOrders", "expression": 'status = "handling" and value > 0',
                                  "disableSingleFire": single_fire_disabled})
    order_id, _ = sandbox.create_orders(2)
    Vtex(sandbox).start_handling(order_id)
    sandbox.set_status(order_id, "handling")  # a later change while it still matches

    assert sandbox.wait_for_hooks(5)
    assert states(receiver.notifications) == [(order_id, "handling")] * expected


def test_no_hook_no_notifications_and_deleting_it_stops_them(sandbox: Sandbox, receiver: Receiver) -> None:
    sandbox.create_order()
    configure(sandbox, receiver, {"type": "FromWorkflow", "status": ["ready-for-handling"]})
    sent = sandbox.create_order()
    assert Vtex(sandbox).request("DELETE", "/api/orders/hook/config").status_code == 200
    sandbox.create_order()

    assert sandbox.wait_for_hooks(5)
    assert states(receiver.notifications) == [(sent, "ready-for-handling")]


def test_a_failed_delivery_is_retried_on_a_growing_interval(sandbox: Sandbox, receiver: Receiver) -> None:
    configure(sandbox, receiver, {"type": "FromWorkflow", "status": ["ready-for-handling"]})
    receiver.statuses.extend([500, 503, 204])  # 204 is not the 200 VTEX asks for

    order_id = sandbox.create_order()

    assert sandbox.wait_for_hooks(5)
    tries = receiver.notifications
    assert [r.body for r in tries] == [tries[0].body] * 4 and tries[0].body["OrderId"] == order_id
    gaps = [later.at - earlier.at for earlier, later in zip(tries, tries[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4  # 0.1 s, doubling
    assert [(d.attempt, d.status, d.outcome) for d in sandbox.hook_deliveries] == [
        (1, 500, "retrying"), (2, 503, "retrying"), (3, 204, "retrying"), (4, 200, "delivered")]
    stats = sandbox.stats()
    assert (stats["hook_notifications"], stats["hook_attempts"], stats["hook_delivered"]) == (1, 4, 1)


def test_an_unreachable_endpoint_is_retried_until_the_sandbox_gives_up() -> None:
    with Sandbox(seed=1, hook_retry_base_seconds=0.01, hook_max_attempts=3) as sandbox:
        # Set without the ping, which an unreachable endpoint would fail.
        sandbox.hook_config = {"filter": {"type": "FromWorkflow", "status": ["ready-for-handling"]},
                               "hook": {"url": "http://127.0.0.1:9/nothing-here", "headers": {}}}
        sandbox.create_order()

        assert sandbox.wait_for_hooks(5)
        deliveries = sandbox.hook_deliveries
        assert [(d.attempt, d.status, d.outcome) for d in deliveries] == [
            (1, None, "retrying"), (2, None, "retrying"), (3, None, "gave_up")]
        assert "ConnectionError" in deliveries[0].error
        assert sandbox.stats()["hook_gave_up"] == 1


def run_with_knobs(receiver: Receiver, **knobs: Any) -> tuple[Sandbox, list[str]]:
    sandbox = Sandbox(seed=7, **knobs).start()
    configure(sandbox, receiver, {"type": "FromWorkflow", "status": ["ready-for-handling"]})
    order_ids = sandbox.create_orders(30)
    assert sandbox.wait_for_hooks(10)
    sandbox.stop()
    return sandbox, order_ids


def test_the_drop_rate_silently_loses_notifications_the_same_way_for_a_seed(receiver: Receiver) -> None:
    sandbox, order_ids = run_with_knobs(receiver, hook_drop_rate=0.3)
    delivered = {order_id for order_id, _ in states(receiver.notifications)}
    dropped = {d.order_id for d in sandbox.hook_deliveries if d.outcome == "dropped"}

    assert 0 < len(dropped) < 30
    assert delivered | dropped == set(order_ids) and not delivered & dropped
    assert sandbox.stats()["hook_dropped"] == len(dropped)
    assert sandbox.stats()["hook_notifications"] == 30
    again, _ = run_with_knobs(receiver, hook_drop_rate=0.3)  # same seed, same orders, same losses
    assert {d.order_id for d in again.hook_deliveries if d.outcome == "dropped"} == dropped


def test_the_duplicate_rate_sends_some_notifications_twice(receiver: Receiver) -> None:
    sandbox, order_ids = run_with_knobs(receiver, hook_duplicate_rate=0.5)
    received = states(receiver.notifications)
    twice = {order_id for order_id in order_ids if received.count((order_id, "ready-for-handling")) == 2}

    assert 0 < len(twice) < 30
    assert sorted(set(received)) == sorted((order_id, "ready-for-handling") for order_id in order_ids)
    assert {d.order_id for d in sandbox.hook_deliveries if d.duplicate} == twice


def test_the_delay_holds_each_notification_back(sandbox: Sandbox, receiver: Receiver) -> None:
    configure(sandbox, receiver, {"type": "FromWorkflow", "status": ["ready-for-handling"]})
    sandbox.hook_delay_ms = 300
    changed_at = time.monotonic()

    sandbox.create_order()

    assert sandbox.wait_for_hooks(5)
    [received] = receiver.notifications
    assert received.at - changed_at >= 0.3


def test_slow_deliveries_never_block_the_sandboxs_api(sandbox: Sandbox, receiver: Receiver) -> None:
    configure(sandbox, receiver, {"type": "FromWorkflow", "status": ["ready-for-handling", "handling"]})
    receiver.sleep_seconds = 1.0
    vtex = Vtex(sandbox)

    started = time.monotonic()
    order_ids = requests.post(f"{sandbox.url}/_sandbox/orders", json={"count": 5}, timeout=5).json()["orderIds"]
    for order_id in order_ids:
        assert vtex.start_handling(order_id).status_code == 204
        assert vtex.request("GET", f"/api/oms/pvt/orders/{order_id}").status_code == 200
    assert len(vtex.read()) == 10
    elapsed = time.monotonic() - started

    assert elapsed < 0.8  # ten notifications at 1 s each are still being delivered
    assert sandbox.stats()["hook_pending"] > 0
    assert sandbox.wait_for_hooks(10)
    assert len(receiver.notifications) == 10


def test_stop_ends_the_delivery_threads_and_abandons_pending_retries(receiver: Receiver) -> None:
    sandbox = Sandbox(seed=3, hook_retry_base_seconds=30).start()
    configure(sandbox, receiver, {"type": "FromWorkflow", "status": ["ready-for-handling"]})
    receiver.statuses.append(500)
    sandbox.create_order()
    deadline = time.monotonic() + 5
    while not sandbox.hook_deliveries and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sandbox.stats()["hook_pending"] == 1  # the retry waits 30 s

    started = time.monotonic()
    sandbox.stop()

    assert time.monotonic() - started < 2
    assert not [t for t in threading.enumerate() if t.name.startswith("vtex-sandbox-hook-") and t.is_alive()]
    assert sandbox.stats()["hook_pending"] == 0


def test_hook_knobs_and_deliveries_are_reachable_over_http(sandbox: Sandbox, receiver: Receiver) -> None:
    configure(sandbox, receiver, {"type": "FromWorkflow", "status": ["ready-for-handling"]})
    base = f"{sandbox.url}/_sandbox"

    knobs = requests.post(f"{base}/faults", json={"hook_drop_rate": 1, "hook_delay_ms": 5, "hook_duplicate_rate": 0,
                                                  "hook_retry_base_seconds": 0.2, "hook_max_attempts": 4},
                          timeout=5).json()
    requests.post(f"{base}/orders", json={"count": 2}, timeout=5)

    assert (knobs["hook_drop_rate"], knobs["hook_delay_ms"], knobs["hook_max_attempts"]) == (1.0, 5.0, 4)
    assert (sandbox.hook_retry_base_seconds, sandbox.hook_max_attempts) == (0.2, 4)
    listed = requests.get(f"{base}/hook/deliveries", timeout=5).json()
    assert [(d["state"], d["attempt"], d["outcome"]) for d in listed] == [("ready-for-handling", 0, "dropped")] * 2
    stats = requests.get(f"{base}/stats", timeout=5).json()
    assert (stats["hook_notifications"], stats["hook_dropped"], stats["hook_attempts"]) == (2, 2, 0)
