"""The VTEX sandbox over real HTTP. Imports no Django, so it also runs with `-p no:django`."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from sandbox.server import Sandbox
from tests.sandbox.vtex_client import ISO_7_DIGITS_Z, Vtex, fixture

FROM_WORKFLOW = {"type": "FromWorkflow", "status": ["ready-for-handling", "handling", "cancel", "canceled"]}
QUEUE = {"visibilityTimeoutInSeconds": 250, "MessageRetentionPeriodInSeconds": 345600}


def erp_post(sandbox: Sandbox, key: str | None, order_id: str = "1000000000001-01", **kwargs: Any) -> requests.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    body = {"event": "order.ready", "store": "sandbox", "orderId": order_id, "order": {"orderId": order_id}}
    return requests.post(sandbox.erp_url, json=body, headers=headers, timeout=kwargs.pop("timeout", 5), **kwargs)


# ---- auth ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {},
    {"X-VTEX-API-AppKey": "vtexappkey-sandbox-HUB", "X-VTEX-API-AppToken": "wrong"},
    {"X-VTEX-API-AppKey": "someone-else", "X-VTEX-API-AppToken": "sandbox-token"},
])
def test_it_rejects_calls_without_the_right_app_key_and_token(sandbox: Sandbox, headers: dict[str, str]) -> None:
    response = requests.get(f"{sandbox.url}/api/orders/feed", params={"maxlot": 1}, headers=headers, timeout=5)

    assert response.status_code == 401
    assert response.json() == fixture("start-handling-401-unauthorized.json")
    assert sandbox.requests[-1].status == 401


def test_auth_header_names_are_case_insensitive(sandbox: Sandbox) -> None:
    headers = {"x-vtex-api-appkey": sandbox.app_key, "X-VTEX-API-APPTOKEN": sandbox.app_token}
    assert requests.get(f"{sandbox.url}/api/orders/feed/config", headers=headers, timeout=5).status_code == 200


# ---- feed configuration -------------------------------------------------------------------------------


def test_feed_config_get_answers_like_vtex(sandbox: Sandbox, vtex: Vtex) -> None:
    sandbox.create_orders(3)

    body = vtex.request("GET", "/api/orders/feed/config").json()

    assert body.keys() == fixture("feed-config-get-response-fromorders.json").keys()
    assert body["queue"] == {"visibilityTimeoutInSeconds": 250, "messageRetentionPeriodInSeconds": 345600}
    assert body["filter"]["type"] == "FromWorkflow"
    assert body["quantity"] == 3
    assert isinstance(body["approximateAgeOfOldestMessageInSeconds"], float)


def test_feed_config_set_replaces_the_config_and_keeps_queued_messages(sandbox: Sandbox, vtex: Vtex) -> None:
    sandbox.create_orders(2)
    config = {"filter": {"type": "FromWorkflow", "status": ["invoiced", "redy-for-handlin"]}, "queue": QUEUE}

    response = vtex.request("POST", "/api/orders/feed/config", json=config)

    assert response.status_code == 200 and response.content == b""
    assert sandbox.feed_config == config  # the misspelled status is accepted, as VTEX does
    assert vtex.request("GET", "/api/orders/feed/config").json()["quantity"] == 2
    assert sandbox.create_order() and sandbox.queue_size() == 2  # filter now leaves ready-for-handling out


@pytest.mark.parametrize("filter_", [
    {"type": "FromWorkflow", "status": ["handling"], "expression": "status = \"handling\""},
    {"type": "FromWorkflow", "status": ["handling"], "disableSingleFire": True},
    {"type": "FromOrders", "expression": "value > 100", "disableSingleFire": False, "status": ["handling"]},
])
def test_feed_config_refuses_mixed_filter_fields_with_409(sandbox: Sandbox, vtex: Vtex, filter_: dict) -> None:
    before = sandbox.feed_config

    response = vtex.request("POST", "/api/orders/feed/config", json={"filter": filter_, "queue": QUEUE})

    assert response.status_code == 409
    assert sandbox.feed_config == before


@pytest.mark.parametrize("body", [
    {"filter": FROM_WORKFLOW, "queue": {**QUEUE, "MessageRetentionPeriodInSeconds": 345599}},
    {"filter": FROM_WORKFLOW, "queue": {**QUEUE, "MessageRetentionPeriodInSeconds": 1209601}},
    {"filter": FROM_WORKFLOW, "queue": {**QUEUE, "visibilityTimeoutInSeconds": 43201}},
    {"filter": FROM_WORKFLOW, "queue": {"visibilityTimeoutInSeconds": 250}},
    {"filter": FROM_WORKFLOW},
    {"queue": QUEUE},
    {"filter": {"status": ["handling"]}, "queue": QUEUE},
    {"filter": {"type": "FromWorkflow", "status": []}, "queue": QUEUE},
    {"filter": {"type": "FromOrders", "expression": "status = "}, "queue": QUEUE},
    "not json",
])
def test_feed_config_refuses_bad_bodies_with_400(sandbox: Sandbox, vtex: Vtex, body: Any) -> None:
    data = body if isinstance(body, str) else json.dumps(body)

    response = vtex.request("POST", "/api/orders/feed/config", data=data)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "400"


def test_a_from_workflow_feed_without_status_receives_every_status_change(sandbox: Sandbox, vtex: Vtex) -> None:
    config = {"filter": {"type": "FromWorkflow"}, "queue": QUEUE}
    assert vtex.request("POST", "/api/orders/feed/config", json=config).status_code == 200
    order_id = sandbox.create_order(status="payment-pending")
    sandbox.set_status(order_id, "waiting-ffmt-authorization")

    assert [i["state"] for i in vtex.read()] == ["payment-pending", "waiting-ffmt-authorization"]
    assert vtex.request("GET", "/api/orders/feed/config").json()["filter"] == {"type": "FromWorkflow"}


def test_feed_config_delete_then_reads_and_config_get_are_404(sandbox: Sandbox, vtex: Vtex) -> None:
    assert vtex.request("DELETE", "/api/orders/feed/config").status_code == 200

    assert vtex.request("GET", "/api/orders/feed", params={"maxlot": 1}).status_code == 404
    config = vtex.request("GET", "/api/orders/feed/config")
    assert config.status_code == 404
    assert config.json()["error"]["message"] == "Feed configuration not found"
    assert vtex.request("DELETE", "/api/orders/feed/config").status_code == 404


def test_a_new_feed_only_captures_changes_made_after_it_exists() -> None:
    with Sandbox(feed_configured=False, seed=1) as sandbox:
        vtex = Vtex(sandbox)
        first = sandbox.create_order()
        assert vtex.request("GET", "/api/orders/feed", params={"maxlot": 10}).status_code == 404

        vtex.request("POST", "/api/orders/feed/config", json={"filter": FROM_WORKFLOW, "queue": QUEUE})
        second = sandbox.create_order()
        sandbox.set_status(first, "handling")

        assert sorted((i["orderId"], i["state"]) for i in vtex.read()) == sorted(
            [(second, "ready-for-handling"), (first, "handling")])


# ---- feed reads and commits ---------------------------------------------------------------------------


def test_feed_items_look_like_vtex_items(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = sandbox.create_order()

    [item] = vtex.read()

    assert list(item) == list(fixture("feed-items-response.json")[0])
    assert item["orderId"] == order_id
    assert (item["domain"], item["state"], item["lastState"]) == ("Fulfillment", "ready-for-handling",
                                                                  "window-to-cancel")
    assert re.fullmatch(r"[0-9A-F]{32}", item["eventId"])
    assert item["handle"].startswith("AQEB") and len(item["handle"]) == 44
    for field in ("lastChange", "currentChange"):
        assert ISO_7_DIGITS_Z.match(item[field])
    # lastChange is the previous change (window-to-cancel began), as on VTEX: earlier than currentChange.
    assert datetime.fromisoformat(item["lastChange"]) < datetime.fromisoformat(item["currentChange"])
    assert sandbox.order(order_id)["lastChange"].startswith(item["currentChange"][:27])


def test_read_items_stay_hidden_until_the_visibility_timeout_ends(sandbox: Sandbox, vtex: Vtex) -> None:
    ids = sandbox.create_orders(3)

    first = vtex.read()
    assert [i["orderId"] for i in first] == ids
    assert vtex.read() == []
    assert sandbox.queue_size() == 3

    sandbox.make_all_visible()
    again = vtex.read()

    assert [i["eventId"] for i in again] == [i["eventId"] for i in first]
    assert all(a["handle"] != b["handle"] for a, b in zip(again, first))


def test_items_reappear_by_themselves_after_the_timeout(sandbox: Sandbox, vtex: Vtex) -> None:
    sandbox.create_order()
    now = time.time()
    sandbox.clock = lambda: now
    assert len(vtex.read()) == 1

    sandbox.clock = lambda: now + 249
    assert vtex.read() == []
    sandbox.clock = lambda: now + 251
    assert len(vtex.read()) == 1


def test_messages_older_than_retention_are_dropped(sandbox: Sandbox, vtex: Vtex) -> None:
    now = time.time()
    sandbox.clock = lambda: now
    sandbox.create_orders(2)

    sandbox.clock = lambda: now + 345_601
    assert vtex.read() == []
    assert sandbox.queue_size() == 0


def test_commit_removes_items_by_their_current_handle_only(sandbox: Sandbox, vtex: Vtex) -> None:
    sandbox.create_orders(2)
    stale = [i["handle"] for i in vtex.read()]
    sandbox.make_all_visible()
    current = vtex.read()

    assert vtex.commit(stale + ["unknown-handle"]).status_code == 200
    assert sandbox.queue_size() == 2  # stale and unknown handles are ignored

    response = vtex.commit([current[0]["handle"]])

    assert response.status_code == 200 and response.content == b""
    assert sandbox.queue_size() == 1
    assert sandbox.committed_handles[-1] == current[0]["handle"]
    sandbox.make_all_visible()
    assert [i["eventId"] for i in vtex.read()] == [current[1]["eventId"]]


def test_stats_count_read_items_as_hidden_until_the_timeout_ends(sandbox: Sandbox, vtex: Vtex) -> None:
    now = time.time()
    sandbox.clock = lambda: now
    sandbox.create_orders(3)
    handles = [i["handle"] for i in vtex.read(maxlot=2)]
    assert (sandbox.stats()["queue"], sandbox.stats()["queue_hidden"]) == (3, 2)

    vtex.commit(handles[:1])
    assert (sandbox.stats()["queue"], sandbox.stats()["queue_hidden"]) == (2, 1)
    sandbox.clock = lambda: now + 251
    assert (sandbox.stats()["queue"], sandbox.stats()["queue_hidden"]) == (2, 0)
    assert requests.get(f"{sandbox.url}/_sandbox/stats", timeout=5).json()["queue_hidden"] == 0


def test_commit_faults_answer_503_and_the_items_come_back_after_the_timeout() -> None:
    with Sandbox(seed=3, shuffle=False, commit_fault_rate=0.5, visibility_timeout=5) as sandbox:
        vtex = Vtex(sandbox)
        now = time.time()
        sandbox.clock = lambda: now
        sandbox.create_orders(20)
        statuses = [vtex.commit([item["handle"]]).status_code for item in vtex.read() + vtex.read()]
        assert set(statuses) == {200, 503} and vtex.read() == []  # reads are not affected
        failed = statuses.count(503)
        assert sandbox.stats()["queue"] == sandbox.stats()["queue_hidden"] == failed

        sandbox.clock = lambda: now + 4.9
        assert vtex.read() == []
        sandbox.clock = lambda: now + 5
        assert len(vtex.read()) == failed  # shown again, with new handles


@pytest.mark.parametrize("body", ["not json", json.dumps({"handle": []}), json.dumps(["a"])])
def test_commit_refuses_a_body_without_handles(vtex: Vtex, body: str) -> None:
    assert vtex.request("POST", "/api/orders/feed", data=body).status_code == 400


@pytest.mark.parametrize("maxlot", ["", "0", "11", "abc", "-1"])
def test_feed_read_refuses_a_maxlot_outside_1_to_10(vtex: Vtex, maxlot: str) -> None:
    assert vtex.request("GET", "/api/orders/feed", params={"maxlot": maxlot}).status_code == 400


def test_feed_read_without_maxlot_returns_a_lot_of_10_like_vtexs_csharp_consumer_expects(
    sandbox: Sandbox, vtex: Vtex
) -> None:
    sandbox.create_orders(12)

    response = vtex.request("GET", "/api/orders/feed")

    assert response.status_code == 200 and len(response.json()) == 10


def test_feed_read_returns_at_most_maxlot_items(sandbox: Sandbox, vtex: Vtex) -> None:
    sandbox.create_orders(15)

    assert len(vtex.read(10)) == 10
    assert len(vtex.read(3)) == 3
    assert len(vtex.read(10)) == 2


def test_shuffled_reads_still_deliver_every_message_once() -> None:
    with Sandbox(seed=5, shuffle=True) as sandbox:
        vtex = Vtex(sandbox)
        ids = sandbox.create_orders(60)
        seen: list[str] = []
        while batch := vtex.read(10):
            seen += [i["orderId"] for i in batch]
            vtex.commit([i["handle"] for i in batch])

        assert sorted(seen) == sorted(ids)
        assert seen != ids  # no ordering guarantee
        assert sandbox.queue_size() == 0


def test_duplicate_rate_enqueues_copies_with_the_same_event_id() -> None:
    with Sandbox(seed=3, duplicate_rate=1.0, shuffle=False) as sandbox:
        order_id = sandbox.create_order()

        items = Vtex(sandbox).read()

        assert len(items) == 2
        assert items[0]["eventId"] == items[1]["eventId"] and items[0]["handle"] != items[1]["handle"]
        assert {i["orderId"] for i in items} == {order_id}


def test_enqueue_helpers_allow_duplicate_and_malformed_items(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = sandbox.create_order()
    [original] = vtex.read()
    sandbox.enqueue_event(order_id=order_id, state="ready-for-handling", event_id=original["eventId"],
                          current_change=original["currentChange"])
    sandbox.enqueue_raw({"orderId": order_id, "state": None, "handle": "old"})

    duplicate, malformed = vtex.read()

    assert duplicate["eventId"] == original["eventId"]
    assert duplicate["currentChange"] == original["currentChange"]
    assert malformed["state"] is None and malformed["handle"].startswith("AQEB")


def test_set_status_emits_an_event_or_nothing_when_filtered_out(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = sandbox.create_order()
    vtex.commit([i["handle"] for i in vtex.read()])

    event = sandbox.set_status(order_id, "invoiced")
    assert (event["state"], event["lastState"], event["orderId"]) == ("invoiced", "ready-for-handling", order_id)
    assert sandbox.set_status(order_id, "not-a-watched-status") == {}

    assert [i["eventId"] for i in vtex.read()] == [event["eventId"]]
    assert sandbox.order(order_id)["status"] == "not-a-watched-status"


# ---- FromOrders filter (JSONata) ----------------------------------------------------------------------


@pytest.mark.parametrize("single_fire_disabled, expected_events", [(False, 1), (True, 2)])
def test_from_orders_filter_evaluates_jsonata_against_the_order(
    sandbox: Sandbox, vtex: Vtex, single_fire_disabled: bool, expected_events: int
) -> None:
    config = {"filter": {"type": "FromOrders", "expression": 'status = "handling" and value > 0',
                         "disableSingleFire": single_fire_disabled}, "queue": QUEUE}
    assert vtex.request("POST", "/api/orders/feed/config", json=config).status_code == 200
    order_id, other = sandbox.create_orders(2)

    assert sandbox.queue_size() == 0  # ready-for-handling does not match
    assert vtex.start_handling(order_id).status_code == 204
    sandbox.set_status(order_id, "handling")  # a later change while it still matches

    items = vtex.read()
    assert len(items) == expected_events
    assert {(i["orderId"], i["state"]) for i in items} == {(order_id, "handling")}


# ---- orders -------------------------------------------------------------------------------------------


def test_get_order_returns_a_consistent_vtex_document(sandbox: Sandbox, vtex: Vtex) -> None:
    ids = sandbox.create_orders(5)
    documents = [vtex.request("GET", f"/api/oms/pvt/orders/{order_id}").json() for order_id in ids]

    example = fixture("get-order-response.json")
    for order_id, doc in zip(ids, documents):
        assert doc.keys() == example.keys()
        assert re.fullmatch(r"1\d{12}-01", order_id)
        assert doc["orderId"] == order_id and doc["orderGroup"] == order_id[:-3]
        assert doc["status"] == "ready-for-handling"
        items_total = sum(i["price"] * i["quantity"] for i in doc["items"])
        totals = {t["id"]: t["value"] for t in doc["totals"]}
        assert totals["Items"] == items_total
        assert doc["value"] == sum(totals.values())
        assert 1 <= len(doc["items"]) <= 3
        assert len(doc["shippingData"]["logisticsInfo"]) == len(doc["items"])
    assert len({d["clientProfileData"]["email"] for d in documents}) == 5
    assert len({d["sequence"] for d in documents}) == 5


def test_get_order_of_an_unknown_id_is_404(vtex: Vtex) -> None:
    response = vtex.request("GET", "/api/oms/pvt/orders/999-01")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "OMS002"


def test_orders_are_reproducible_with_a_seed() -> None:
    first, second = Sandbox(seed=9), Sandbox(seed=9)
    a, b = first.create_order(), second.create_order()

    assert a == b
    assert first.order(a)["clientProfileData"] == second.order(b)["clientProfileData"]


def test_start_handling_answers_204_once_then_409_oms003(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = sandbox.create_order()
    vtex.commit([i["handle"] for i in vtex.read()])

    first = vtex.start_handling(order_id)
    second = vtex.start_handling(order_id)

    assert first.status_code == 204 and first.content == b"" and "Content-Length" not in first.headers
    assert second.status_code == 409
    assert second.json() == fixture("start-handling-409-not-ready-for-handling.json")
    assert sandbox.order(order_id)["status"] == "handling"
    assert sandbox.start_handling_calls == [(order_id, 204), (order_id, 409)]
    [event] = vtex.read()  # the default filter leaves start-handling out
    assert (event["state"], event["lastState"]) == ("handling", "start-handling")
    assert vtex.start_handling("999-01").status_code == 404


def test_start_handling_passes_through_start_handling_so_a_feed_filtered_on_it_fires(
    sandbox: Sandbox, vtex: Vtex
) -> None:
    config = {"filter": {"type": "FromWorkflow", "status": ["start-handling", "handling"]}, "queue": QUEUE}
    vtex.request("POST", "/api/orders/feed/config", json=config)
    order_id = sandbox.create_order()

    assert vtex.start_handling(order_id).status_code == 204

    first, second = vtex.read()
    assert [(e["state"], e["lastState"]) for e in (first, second)] == [("start-handling", "ready-for-handling"),
                                                                      ("handling", "start-handling")]
    assert second["lastChange"] == first["currentChange"] < second["currentChange"]
    assert sandbox.order(order_id)["status"] == "handling"


def test_cancel_moves_the_order_through_cancel_to_canceled(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = sandbox.create_order()
    vtex.commit([i["handle"] for i in vtex.read()])

    response = vtex.request("POST", f"/api/oms/pvt/orders/{order_id}/cancel", json={"reason": "No stock"})

    body = response.json()
    assert response.status_code == 200
    assert body.keys() == fixture("cancel-order-response.json").keys()
    assert body["orderId"] == order_id
    assert sandbox.order(order_id)["status"] == "canceled"
    assert sandbox.order(order_id)["cancelReason"] == "No stock"
    assert [(i["state"], i["lastState"]) for i in vtex.read()] == [("cancel", "ready-for-handling"),
                                                                  ("canceled", "cancel")]


def test_cancel_of_an_invoiced_order_is_refused(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = sandbox.create_order(status="invoiced")

    response = vtex.request("POST", f"/api/oms/pvt/orders/{order_id}/cancel", json={"reason": "late"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "OMS004"
    assert sandbox.order(order_id)["status"] == "invoiced"


# ---- ERP receiver -------------------------------------------------------------------------------------


def test_erp_creates_once_and_replays_the_same_id(sandbox: Sandbox) -> None:
    first = erp_post(sandbox, "key-1")
    replay = erp_post(sandbox, "key-1")
    other = erp_post(sandbox, "key-2", order_id="1000000000002-01")

    assert (first.status_code, replay.status_code, other.status_code) == (201, 200, 201)
    assert first.json() == replay.json() == {"id": "ERP-000001"}
    assert other.json() == {"id": "ERP-000002"}
    assert [(d.idempotency_key, d.replay, d.erp_id) for d in sandbox.erp_deliveries] == [
        ("key-1", False, "ERP-000001"), ("key-1", True, "ERP-000001"), ("key-2", False, "ERP-000002")]
    assert sandbox.erp_deliveries[0].headers["idempotency-key"] == "key-1"
    assert sandbox.erp_deliveries[0].body["event"] == "order.ready"
    listed = requests.get(sandbox.erp_url, timeout=5).json()
    assert [d["erp_id"] for d in listed] == ["ERP-000001", "ERP-000001", "ERP-000002"]
    assert "body" not in listed[0]
    stats = sandbox.stats()
    assert (stats["erp_deliveries"], stats["erp_unique_keys"], stats["erp_orders"]) == (3, 2, 2)


@pytest.mark.parametrize("headers, data", [
    ({}, json.dumps({"event": "order.ready", "orderId": "1-01"})),
    ({"Idempotency-Key": "k"}, "not json"),
    ({"Idempotency-Key": "k"}, json.dumps({"event": "order.ready"})),
    ({"Idempotency-Key": "k"}, json.dumps({"orderId": "1-01"})),
])
def test_erp_refuses_bad_posts_with_400(sandbox: Sandbox, headers: dict[str, str], data: str) -> None:
    response = requests.post(sandbox.erp_url, data=data, headers=headers, timeout=5)

    assert response.status_code == 400
    assert "error" in response.json()
    assert sandbox.erp_deliveries == []


def test_the_refusing_erp_quotes_the_customer_data_back_with_422(sandbox: Sandbox) -> None:
    [order_id] = sandbox.create_orders(1)
    profile = sandbox.order(order_id)["clientProfileData"]
    body = {"event": "order.ready", "store": "sandbox", "orderId": order_id, "order": sandbox.order(order_id)}
    switched = requests.post(f"{sandbox.url}/_sandbox/faults", json={"erp_refuse_customer_data": True}, timeout=5)

    refused = requests.post(sandbox.erp_url, json=body, headers={"Idempotency-Key": "key-1"}, timeout=5)

    assert switched.json()["erp_refuse_customer_data"] is True and sandbox.erp_refuse_customer_data
    assert refused.status_code == 422
    assert refused.json() == {"error": f"customer {profile['email']} document {profile['document']} "
                                       f"phone {profile['phone']} failed validation"}
    assert [(d.status, d.erp_id) for d in sandbox.erp_deliveries] == [(422, "")]
    sandbox.erp_refuse_customer_data = False  # the Python switch; the same order then goes through
    accepted = requests.post(sandbox.erp_url, json=body, headers={"Idempotency-Key": "key-1"}, timeout=5)
    assert accepted.status_code == 201 and accepted.json() == {"id": "ERP-000001"}


# ---- scripted faults ----------------------------------------------------------------------------------


def test_fail_next_429_sends_retry_after_then_recovers(sandbox: Sandbox, vtex: Vtex) -> None:
    sandbox.retry_after_seconds = 7
    sandbox.fail_next("feed_read", 429, times=2)

    responses = [vtex.request("GET", "/api/orders/feed", params={"maxlot": 1}) for _ in range(3)]

    assert [r.status_code for r in responses] == [429, 429, 200]
    assert responses[0].headers["Retry-After"] == "7"
    assert responses[0].json()["error"]["code"] == "429"
    assert [r.status for r in sandbox.requests] == [429, 429, 200]


def test_fail_next_uses_the_given_headers_and_body(sandbox: Sandbox, vtex: Vtex) -> None:
    sandbox.fail_next("order_get", 429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, body="slow down")
    response = vtex.request("GET", "/api/oms/pvt/orders/x-01")

    assert response.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert response.text == "slow down"


def test_scripted_failures_of_start_handling_and_commit_change_nothing(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = sandbox.create_order()
    [item] = vtex.read()
    sandbox.fail_next("start_handling", 500)
    sandbox.fail_next("feed_commit", 503)

    assert vtex.start_handling(order_id).status_code == 500
    assert vtex.commit([item["handle"]]).status_code == 503

    assert sandbox.order(order_id)["status"] == "ready-for-handling"
    assert sandbox.queue_size() == 1
    assert sandbox.start_handling_calls == [(order_id, 500)]
    assert vtex.start_handling(order_id).status_code == 204


def test_fail_next_409_on_start_handling_sends_the_oms003_body(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = sandbox.create_order()
    sandbox.fail_next("start_handling", 409)

    response = vtex.start_handling(order_id)

    assert response.json() == fixture("start-handling-409-not-ready-for-handling.json")
    assert sandbox.order(order_id)["status"] == "ready-for-handling"


@pytest.mark.parametrize("route, method, path", [
    ("order_get", "GET", "/api/oms/pvt/orders/{order_id}"),
    ("feed_read", "GET", "/api/orders/feed?maxlot=10"),
    ("feed_config_get", "GET", "/api/orders/feed/config"),
])
def test_fail_next_broken_json_answers_200_with_unparseable_json(
    sandbox: Sandbox, vtex: Vtex, route: str, method: str, path: str
) -> None:
    order_id = sandbox.create_order()
    sandbox.fail_next(route, "broken_json")

    response = vtex.request(method, path.format(order_id=order_id))

    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert sandbox.queue_size() == 1 and len(vtex.read()) == 1  # the broken read hid nothing


def test_scripted_erp_failure_is_not_stored_as_a_delivery(sandbox: Sandbox) -> None:
    sandbox.fail_next("erp", 500)

    response = erp_post(sandbox, "key-1")

    assert response.status_code == 500 and "error" in response.json()
    assert sandbox.erp_deliveries == []
    assert sandbox.requests[-1].status == 500
    assert erp_post(sandbox, "key-1").status_code == 201


def test_fail_next_timeout_answers_normally_after_the_delay(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = sandbox.create_order()
    sandbox.fail_next("order_get", "timeout", delay_seconds=0.6)

    with pytest.raises(requests.ReadTimeout):
        vtex.request("GET", f"/api/oms/pvt/orders/{order_id}", timeout=0.2)
    assert vtex.request("GET", f"/api/oms/pvt/orders/{order_id}").status_code == 200

    sandbox.fail_next("order_get", "timeout", delay_seconds=0.3)
    started = time.monotonic()
    assert vtex.request("GET", f"/api/oms/pvt/orders/{order_id}").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_timeout_on_start_handling_moves_the_order_before_the_client_gives_up(sandbox: Sandbox,
                                                                              vtex: Vtex) -> None:
    order_id = sandbox.create_order()
    sandbox.fail_next("start_handling", "timeout", delay_seconds=0.6)

    with pytest.raises(requests.ReadTimeout):
        vtex.start_handling(order_id, timeout=0.2)

    assert sandbox.order(order_id)["status"] == "handling"
    assert sandbox.start_handling_calls == [(order_id, 204)]
    assert vtex.start_handling(order_id).status_code == 409  # the retry after a "crash"


def test_timeout_on_erp_stores_the_delivery_before_the_client_gives_up(sandbox: Sandbox) -> None:
    sandbox.fail_next("erp", "timeout", delay_seconds=0.6)

    with pytest.raises(requests.ReadTimeout):
        erp_post(sandbox, "key-1", timeout=0.2)

    assert [d.status for d in sandbox.erp_deliveries] == [201]
    replay = erp_post(sandbox, "key-1")
    assert replay.status_code == 200 and replay.json() == {"id": "ERP-000001"}


def test_fail_next_refuses_unknown_routes_and_statuses(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError):
        sandbox.fail_next("nope", 500)
    with pytest.raises(ValueError):
        sandbox.fail_next("erp", "explode")


# ---- random faults ------------------------------------------------------------------------------------


def test_random_faults_never_change_state() -> None:
    noisy = Sandbox(seed=11, shuffle=False, fault_rate=0.3, rate_limit_rate=0.2, broken_json_rate=0.3,
                    retry_after_seconds=None)
    with noisy as sandbox:
        vtex = Vtex(sandbox)
        ids = sandbox.create_orders(20)
        statuses: list[int] = []
        for order_id in ids:
            while (status := vtex.start_handling(order_id).status_code) != 204:
                assert status in (429, 503)
                statuses.append(status)
        handled = broken = 0
        for _ in range(400):
            response = vtex.request("GET", "/api/orders/feed", params={"maxlot": 10})
            statuses.append(response.status_code)
            try:
                items = response.json() if response.status_code == 200 else None
            except ValueError:
                items = None  # broken JSON: the items stay visible, nothing to commit
                broken += 1
            if items is None or isinstance(items, dict):
                continue
            if not items and sandbox.queue_size() == 0:
                break
            while vtex.commit([i["handle"] for i in items]).status_code != 200:
                pass
            handled += len(items)
        for index, order_id in enumerate(ids):
            while (code := erp_post(sandbox, f"key-{index}", order_id=order_id).status_code) not in (200, 201):
                assert code in (429, 503)

        assert {429, 503} <= set(statuses) and 200 in statuses and broken > 0
        assert all(sandbox.order(order_id)["status"] == "handling" for order_id in ids)
        assert sandbox.queue_size() == 0
        assert handled == 40  # one ready-for-handling and one handling event per order, each once
        assert len(sandbox.erp_deliveries) == 20 and all(not d.replay for d in sandbox.erp_deliveries)
        assert sandbox.stats()["start_handling_204"] == 20


def test_random_429_sends_retry_after() -> None:
    with Sandbox(seed=1, rate_limit_rate=1.0, retry_after_seconds=3) as sandbox:
        response = Vtex(sandbox).request("GET", "/api/orders/feed/config")

        assert response.status_code == 429
        assert response.headers["Retry-After"] == "3"


def test_latency_delays_every_answer() -> None:
    with Sandbox(latency_ms=150) as sandbox:
        started = time.monotonic()
        Vtex(sandbox).request("GET", "/api/orders/feed/config")
        erp_post(sandbox, "k")

        assert time.monotonic() - started >= 0.3


# ---- hook configuration -------------------------------------------------------------------------------


class _HookEndpoint(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        self.server.pings.append((dict(self.headers), json.loads(self.rfile.read(length))))  # type: ignore[attr-defined]
        self.send_response(self.server.answer)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def hook_endpoint() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HookEndpoint)
    server.pings, server.answer = [], 200  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def hook_body(server: ThreadingHTTPServer) -> dict[str, Any]:
    return {"filter": FROM_WORKFLOW,
            "hook": {"url": f"http://127.0.0.1:{server.server_port}/vtex-hook", "headers": {"X-Secret": "s3"}}}


def test_hook_config_is_saved_after_a_successful_ping(sandbox: Sandbox, vtex: Vtex,
                                                      hook_endpoint: ThreadingHTTPServer) -> None:
    response = vtex.request("POST", "/api/orders/hook/config", json=hook_body(hook_endpoint))

    assert response.status_code == 200
    [(headers, body)] = hook_endpoint.pings  # type: ignore[attr-defined]
    assert body == fixture("hook-ping-request.json")
    assert headers["X-Secret"] == "s3"
    assert sandbox.hook_config == hook_body(hook_endpoint)
    assert vtex.request("GET", "/api/orders/hook/config").json() == hook_body(hook_endpoint)
    assert vtex.request("DELETE", "/api/orders/hook/config").status_code == 200
    assert vtex.request("GET", "/api/orders/hook/config").status_code == 404


def test_hook_config_is_refused_when_the_ping_fails(sandbox: Sandbox, vtex: Vtex,
                                                    hook_endpoint: ThreadingHTTPServer) -> None:
    hook_endpoint.answer = 500  # type: ignore[attr-defined]

    response = vtex.request("POST", "/api/orders/hook/config", json=hook_body(hook_endpoint))

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Hook ping failed")
    assert sandbox.hook_config is None


def test_hook_config_is_refused_when_the_endpoint_is_unreachable(sandbox: Sandbox, vtex: Vtex) -> None:
    body = {"filter": FROM_WORKFLOW, "hook": {"url": "http://127.0.0.1:9/nothing-here", "headers": {}}}

    response = vtex.request("POST", "/api/orders/hook/config", json=body)

    assert response.status_code == 400
    assert sandbox.hook_config is None


@pytest.mark.parametrize("body, status", [
    ({"filter": FROM_WORKFLOW}, 400),
    ({"filter": FROM_WORKFLOW, "hook": {"headers": {}}}, 400),
    ({"filter": FROM_WORKFLOW, "hook": {"url": "http://127.0.0.1:9/x"}}, 400),  # the spec requires headers
    ({"filter": FROM_WORKFLOW, "hook": {"url": "http://127.0.0.1:9/x", "headers": {"k": 1}}}, 400),
    ({"filter": {"type": "FromWorkflow"}, "hook": {"url": "http://127.0.0.1:9/x", "headers": {}}}, 400),
    ({"filter": {"type": "FromOrders", "expression": "value > 1", "status": ["x"]},
      "hook": {"url": "http://127.0.0.1:9/x", "headers": {}}}, 409),
])
def test_hook_config_validates_before_pinging(vtex: Vtex, body: dict[str, Any], status: int) -> None:
    response = vtex.request("POST", "/api/orders/hook/config", json=body)

    assert response.status_code == status
    assert "ping" not in response.json()["error"]["message"]


# ---- control endpoints and HTTP details ---------------------------------------------------------------


def test_control_endpoints_drive_an_out_of_process_sandbox(sandbox: Sandbox) -> None:
    base = f"{sandbox.url}/_sandbox"

    order_ids = requests.post(f"{base}/orders", json={"count": 3}, timeout=5).json()["orderIds"]
    event = requests.post(f"{base}/orders/{order_ids[0]}/status", json={"status": "canceled"}, timeout=5).json()
    knobs = requests.post(f"{base}/faults", json={"latency_ms": 5, "duplicate_rate": 0.5}, timeout=5).json()
    erp_post(sandbox, "key-1")
    requests.post(f"{base}/fail-next", json={"route": "order_get", "status": 503}, timeout=5)

    assert len(order_ids) == 3 and event["state"] == "canceled"
    assert knobs["latency_ms"] == 5 and sandbox.duplicate_rate == 0.5
    assert Vtex(sandbox).request("GET", f"/api/oms/pvt/orders/{order_ids[1]}").status_code == 503
    stats = requests.get(f"{base}/stats", timeout=5).json()
    assert stats["orders"] == {"canceled": 1, "ready-for-handling": 2}
    assert stats["queue"] == 4 and stats["erp_deliveries"] == 1
    assert requests.get(f"{base}/erp/deliveries", timeout=5).json()[0]["idempotency_key"] == "key-1"
    assert requests.post(f"{base}/orders/999-01/status", json={"status": "x"}, timeout=5).status_code == 404
    assert requests.post(f"{base}/faults", json={"nope": 1}, timeout=5).status_code == 400


def test_requests_are_recorded_with_lowercase_headers_and_body(sandbox: Sandbox, vtex: Vtex) -> None:
    vtex.commit(["h1"])

    [recorded] = sandbox.requests
    assert (recorded.method, recorded.path, recorded.status) == ("POST", "/api/orders/feed", 200)
    assert recorded.headers["x-vtex-api-appkey"] == sandbox.app_key
    assert json.loads(recorded.body) == {"handles": ["h1"]}


def test_unknown_paths_are_404(sandbox: Sandbox, vtex: Vtex) -> None:
    assert vtex.request("GET", "/api/nothing").status_code == 404
    assert requests.get(f"{sandbox.url}/elsewhere", timeout=5).status_code == 404
    assert vtex.request("PUT", "/api/nothing").json()["error"]["code"] == "404"


@pytest.mark.parametrize("method, path, allow", [
    ("PUT", "/api/orders/feed", "GET, POST"),
    ("PATCH", "/api/orders/hook/config", "DELETE, GET, POST"),
    ("DELETE", "/api/oms/pvt/orders/1-01", "GET"),
    ("GET", "/api/oms/pvt/orders/1-01/start-handling", "POST"),
    ("OPTIONS", "/api/orders/feed/config", "DELETE, GET, POST"),
    ("PROPFIND", "/erp/orders", "GET, POST"),
])
def test_unsupported_methods_get_a_json_405_with_allow(sandbox: Sandbox, vtex: Vtex, method: str, path: str,
                                                       allow: str) -> None:
    response = vtex.request(method, path)

    assert response.status_code == 405
    assert response.headers["Allow"] == allow
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "405"
    assert sandbox.requests == []  # no route received it: probes are not API traffic


def test_head_gets_the_405_headers_without_a_body_on_a_kept_alive_connection(sandbox: Sandbox) -> None:
    host, port = sandbox.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request("HEAD", "/erp/orders")
    head = connection.getresponse()
    assert (head.status, head.getheader("Allow"), head.read()) == (405, "GET, POST", b"")
    connection.request("GET", "/erp/orders")  # the same connection still reads the next answer cleanly
    assert connection.getresponse().read() == b"[]"
    connection.close()


def test_keep_alive_connections_survive_many_requests(sandbox: Sandbox) -> None:
    order_id = sandbox.create_order()
    host, port = sandbox.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {"X-VTEX-API-AppKey": sandbox.app_key, "X-VTEX-API-AppToken": sandbox.app_token}
    sockets = set()
    for path in [f"/api/oms/pvt/orders/{order_id}", f"/api/oms/pvt/orders/{order_id}/start-handling"] * 10:
        connection.request("GET" if path.endswith("-01") else "POST", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        assert response.getheader("Content-Length", "0") == str(len(body))
        assert not response.will_close
        sockets.add(id(connection.sock))
    connection.close()

    assert len(sockets) == 1  # one TCP connection carried all twenty requests, 204s and 409s included


def test_it_serves_concurrent_clients_quickly() -> None:
    with Sandbox(latency_ms=20, seed=2) as sandbox:
        ids = sandbox.create_orders(50)
        failures: list[int] = []

        def client(offset: int) -> None:
            vtex = Vtex(sandbox)
            for i in range(25):
                response = vtex.request("GET", f"/api/oms/pvt/orders/{ids[(offset + i) % 50]}")
                if response.status_code != 200:
                    failures.append(response.status_code)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rate = 200 / (time.monotonic() - started)

        assert failures == []
        assert rate > 100  # ~300/s on a 2-CPU box; the bound is loose so slow CI stays green
