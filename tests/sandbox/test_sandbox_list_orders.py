"""The sandbox's List orders (GET /api/oms/pvt/orders) and its knob that loses feed events. No Django."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from sandbox.server import Sandbox
from tests.sandbox.vtex_client import Vtex

SPEC = Path(__file__).with_name("orders-api.openapi.json")
LIST = "/api/oms/pvt/orders"


def list_orders(vtex: Vtex, **params: Any) -> dict[str, Any]:
    response = vtex.request("GET", LIST, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def at(sandbox: Sandbox, when: float) -> None:
    sandbox.clock = lambda: when


def test_rows_have_the_fields_of_vtexs_example_and_no_items(sandbox: Sandbox, vtex: Vtex) -> None:
    order_id = sandbox.create_order()
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    example = spec["paths"][LIST]["get"]["responses"]["200"]["content"]["application/json; charset=utf-8"]["example"]

    answer = list_orders(vtex)

    assert set(answer) == set(example)
    [row] = answer["list"]
    assert set(row) == set(example["list"][0])
    document = sandbox.order(order_id)
    assert (row["orderId"], row["status"], row["creationDate"], row["totalValue"], row["items"]) == (
        order_id, "ready-for-handling", document["creationDate"], document["value"], None)
    assert row["totalItems"] == sum(item["quantity"] for item in document["items"])
    assert answer["paging"] == {"total": 1, "pages": 1, "currentPage": 1, "perPage": 15}


def test_f_status_filters_and_accepts_several_statuses(sandbox: Sandbox, vtex: Vtex) -> None:
    ready = sandbox.create_orders(3)
    handling = sandbox.create_orders(2)
    for order_id in handling:
        assert vtex.start_handling(order_id).status_code == 204
    canceled = sandbox.create_order(status="canceled")

    def ids(**params: Any) -> set[str]:
        return {row["orderId"] for row in list_orders(vtex, per_page=100, **params)["list"]}

    assert ids(f_status="ready-for-handling") == set(ready)
    assert ids(f_status="handling") == set(handling)
    assert ids(f_status="handling,canceled") == {*handling, canceled}
    assert ids() == {*ready, *handling, canceled}


def test_pages_follow_per_page_and_stay_within_vtexs_limits(sandbox: Sandbox, vtex: Vtex) -> None:
    order_ids = sandbox.create_orders(35)

    pages = [list_orders(vtex, f_status="ready-for-handling", per_page=10, page=page) for page in (1, 2, 3, 4, 5)]

    assert [page["paging"] for page in pages] == [
        {"total": 35, "pages": 4, "currentPage": n, "perPage": 10} for n in (1, 2, 3, 4, 5)]
    assert [len(page["list"]) for page in pages] == [10, 10, 10, 5, 0]
    seen = [row["orderId"] for page in pages for row in page["list"]]
    assert sorted(seen) == sorted(order_ids)  # every order once, across the pages
    assert list_orders(vtex)["paging"]["perPage"] == 15  # VTEX's default
    for params in ({"per_page": 101}, {"per_page": 0}, {"page": 31}, {"page": 0}, {"page": "x"}):
        response = vtex.request("GET", LIST, params=params)
        assert response.status_code == 400, params
        assert response.json()["error"]["code"] == "400"


def test_newest_first_by_default_and_order_by_creation_date_asc(sandbox: Sandbox, vtex: Vtex) -> None:
    start = 1_800_000_000.0
    order_ids = []
    for n in range(3):
        at(sandbox, start + 60 * n)
        order_ids.append(sandbox.create_order())

    assert [row["orderId"] for row in list_orders(vtex)["list"]] == order_ids[::-1]
    assert [row["orderId"] for row in list_orders(vtex, orderBy="creationDate,asc")["list"]] == order_ids
    assert vtex.request("GET", LIST, params={"orderBy": "creationDate,up"}).status_code == 400


def test_f_creation_date_keeps_orders_created_in_the_range(sandbox: Sandbox, vtex: Vtex) -> None:
    at(sandbox, 1_800_000_000.0)  # 2027-01-15T08:00:00Z; the order was created 20 s before its ready-for-handling
    old = sandbox.create_order()
    at(sandbox, 1_800_003_600.0)
    new = sandbox.create_order()

    def ids(range_: str) -> list[str]:
        return [row["orderId"] for row in list_orders(vtex, f_creationDate=range_)["list"]]

    assert ids("creationDate:[2027-01-15T07:00:00.000Z TO 2027-01-15T08:30:00.000Z]") == [old]
    assert ids("creationDate:[2027-01-15T08:30:00.000Z TO 2027-01-15T10:00:00.000Z]") == [new]
    assert ids("creationDate:[2020-01-01T00:00:00.000Z TO 2027-01-15T10:00:00.000Z]") == [new, old]
    response = vtex.request("GET", LIST, params={"f_creationDate": "yesterday"})
    assert response.status_code == 400


def test_list_orders_needs_the_app_key_and_token(sandbox: Sandbox) -> None:
    assert requests.get(sandbox.url + LIST, timeout=5).status_code == 401


def test_list_orders_can_be_made_to_fail_like_any_vtex_route(sandbox: Sandbox, vtex: Vtex) -> None:
    sandbox.fail_next("order_list", 429)

    limited = vtex.request("GET", LIST)

    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "1")
    assert vtex.request("GET", LIST).status_code == 200


def test_drop_feed_events_for_loses_that_orders_changes_and_no_other(sandbox: Sandbox, vtex: Vtex) -> None:
    lost, kept = "1999999999001-01", "1999999999002-01"
    answer = requests.post(f"{sandbox.url}/_sandbox/faults", json={"drop_feed_events_for": [lost]}, timeout=5)
    assert answer.json()["drop_feed_events_for"] == [lost]

    sandbox.create_order(order_id=lost)
    sandbox.create_order(order_id=kept)

    assert [item["orderId"] for item in vtex.read()] == [kept]
    assert sandbox.stats()["feed_dropped"] == 1
    # The order itself is there: Get order and List orders show it ready for handling.
    assert sandbox.order(lost)["status"] == "ready-for-handling"
    assert lost in {row["orderId"] for row in list_orders(vtex, f_status="ready-for-handling")["list"]}
    refused = requests.post(f"{sandbox.url}/_sandbox/faults", json={"drop_feed_events_for": "x"}, timeout=5)
    assert refused.status_code == 400
