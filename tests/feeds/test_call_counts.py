"""Call counters shared by every process: buffered per process, added to CallCount by a race-safe upsert."""

from __future__ import annotations

import logging
import multiprocessing
import socket
import time

import pytest
from django.db import connection, connections, transaction

from core.call_counts import BUCKETS_MS, call_counts_flush, call_record
from core.models import CallCount, ErpConnection, Store
from core.vtex.client import VtexClient, VtexUnavailable, call_operation
from orders.erp import ORDER_CANCELED, ORDER_READY, connector_for, idempotency_key
from tests.conftest import TOKEN
from tests.feeds.test_commands import _manage

pytestmark = pytest.mark.django_db(transaction=True)  # flushes commit on a connection of their own


def forget_earlier_calls() -> None:
    """Calls made before the test (other tests, connecting a store) are written, then dropped."""
    call_counts_flush()
    CallCount.objects.all().delete()


def counts() -> dict[tuple[str, str, str, str], int]:
    return {(row.system, row.store, row.operation, row.status): row.count for row in CallCount.objects.all()}


def buckets(row: CallCount) -> list[int]:
    return [getattr(row, f"le_{ms}ms") for ms in BUCKETS_MS]


def free_port() -> int:
    """A local port nobody listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_flush_adds_calls_to_the_stored_counts_with_cumulative_buckets():
    forget_earlier_calls()
    for ms in (10, 120, 3000, 30000):
        call_record("vtex", "acme", "feed_read", 200, ms)
    call_record("vtex", "acme", "feed_read", 429, 40)
    assert call_counts_flush() is True
    call_record("vtex", "acme", "feed_read", 200, 60)
    assert call_counts_flush() is True

    row = CallCount.objects.get(system="vtex", store="acme", operation="feed_read", status="200")
    assert (row.count, row.duration_ms_sum) == (5, 10 + 120 + 3000 + 30000 + 60)
    # 50 100 250 500 1000 2500 5000 10000 20000 ms: 30 s is only in +Inf (the count).
    assert buckets(row) == [1, 2, 3, 3, 3, 3, 4, 4, 4]
    assert counts() == {("vtex", "acme", "feed_read", "200"): 5, ("vtex", "acme", "feed_read", "429"): 1}


def test_counts_from_two_processes_add_up():
    forget_earlier_calls()
    call_record("erp", "acme", "erp_send", 201, 30)
    call_record("erp", "acme", "erp_send", 201, 700)  # both still in this process's buffer

    # Another process (as another machine would be) records three and exits: its exit flushes them.
    child = _manage("shell", "-c", "from core.call_counts import call_record\n"
                    "for ms in (5, 80, 4000): call_record('erp', 'acme', 'erp_send', 201, ms)")
    assert child.returncode == 0, child.stderr
    assert call_counts_flush() is True

    row = CallCount.objects.get()
    assert (row.count, row.duration_ms_sum) == (5, 30 + 700 + 5 + 80 + 4000)
    assert buckets(row) == [2, 3, 3, 3, 4, 4, 5, 5, 5]


def _record_in_a_forked_child() -> None:
    call_record("vtex", "acme", "get_order", 200, 20)
    call_record("vtex", "acme", "get_order", 200, 20)  # no flush: the child's exit writes them


def test_a_forked_child_counts_its_own_calls_and_never_its_parents():
    forget_earlier_calls()
    call_record("vtex", "acme", "get_order", 200, 20)  # in the buffer when the child is forked
    connections.close_all()  # the child must not share this process's connection

    child = multiprocessing.get_context("fork").Process(target=_record_in_a_forked_child)
    child.start()
    child.join(60)

    call_counts_flush()

    assert child.exitcode == 0
    # 1 + 2: the child's calls were written when it exited, and the parent's one was not written twice.
    assert counts() == {("vtex", "acme", "get_order", "200"): 3}


def test_a_flush_while_the_database_refuses_keeps_the_counts_for_the_next(monkeypatch, caplog, tmp_path):
    forget_earlier_calls()
    database = connection.settings_dict  # the flush's own connection is made from these settings
    if connection.vendor == "sqlite":
        monkeypatch.setitem(database, "NAME", str(tmp_path / "no-such-directory" / "db.sqlite3"))
    else:
        monkeypatch.setitem(database, "HOST", "127.0.0.1")
        monkeypatch.setitem(database, "PORT", str(free_port()))
    call_record("vtex", "acme", "feed_commit", 204, 30)
    call_record("vtex", "acme", "feed_commit", 204, 30)

    with caplog.at_level(logging.WARNING, logger="hub.metrics"):
        assert call_counts_flush() is False
        call_record("vtex", "acme", "feed_commit", 204, 30)
        assert call_counts_flush() is False
    assert counts() == {}  # read on the test's connection, opened before the database "went away"
    monkeypatch.undo()

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("call counts not written, kept for the next flush")
    assert call_counts_flush() is True
    assert counts() == {("vtex", "acme", "feed_commit", "204"): 3}


@pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite has one writer: a flush waits for the caller")
def test_a_flush_does_not_join_the_callers_transaction():
    forget_earlier_calls()

    with pytest.raises(RuntimeError), transaction.atomic():
        Store.objects.create(name="acme", account="acme", base_url="http://127.0.0.1:9", app_key="k", app_token="t")
        call_record("erp", "acme", "erp_send", 201, 15)
        assert call_counts_flush() is True
        raise RuntimeError("the caller's work fails and is rolled back")

    assert not Store.objects.exists()
    assert counts() == {("erp", "acme", "erp_send", "201"): 1}


def test_a_vtex_call_without_an_answer_counts_as_error_and_a_refused_one_not_at_all():
    forget_earlier_calls()
    client = VtexClient(base_url=f"http://127.0.0.1:{free_port()}", app_key="k", app_token=TOKEN, timeout=2,
                        store="acme")
    with pytest.raises(VtexUnavailable):
        client.feed_read()

    def pause(operation: str) -> None:
        raise VtexUnavailable("paused after a 429")  # the account's limiter refuses: no request is made

    paused = VtexClient(base_url=client.base_url, app_key="k", app_token=TOKEN, timeout=2, store="acme",
                        before_call=pause)
    with pytest.raises(VtexUnavailable):
        paused.order_get("1500000000001-01")
    call_counts_flush()

    assert counts() == {("vtex", "acme", "feed_read", "error"): 1}


def test_every_erp_connector_is_counted_even_one_that_raises(sandbox, settings):
    forget_earlier_calls()
    settings.HUB_ERP_CONNECTORS = [*settings.HUB_ERP_CONNECTORS, "tests.orders.connectors.RaisesInSend"]
    [order_id] = sandbox.create_orders(1)
    document = sandbox.order(order_id)
    tagging = connector_for(ErpConnection(url=sandbox.erp_url, connector="tests.orders.connectors.TaggingConnector"))
    raising = connector_for(ErpConnection(url=sandbox.erp_url, connector="tests.orders.connectors.RaisesInSend"))

    for event in (ORDER_READY, ORDER_READY, ORDER_CANCELED):  # the second is a replay: 200
        key = idempotency_key(store_name="acme", order_id=order_id, event=event)
        tagging.send(event=event, store_name="acme", order_id=order_id, order=document, idempotency_key=key)
    with pytest.raises(KeyError):
        raising.send(event=ORDER_READY, store_name="acme", order_id=order_id, order=document, idempotency_key="k")
    call_counts_flush()

    assert [d.headers.get("x-connector") for d in sandbox.erp_deliveries] == ["tagging"] * 3
    assert counts() == {("erp", "acme", "erp_send", "201"): 1, ("erp", "acme", "erp_send", "200"): 1,
                        ("erp", "acme", "erp_cancel", "201"): 1, ("erp", "acme", "erp_send", "error"): 1}


@pytest.mark.parametrize(("method", "path", "operation"), [
    ("GET", "/api/orders/feed", "feed_read"),
    ("POST", "/api/orders/feed", "feed_commit"),
    ("GET", "/api/orders/feed/config", "feed_config_get"),
    ("POST", "/api/orders/feed/config", "feed_config_set"),
    ("GET", "/api/orders/hook/config", "hook_config_get"),
    ("POST", "/api/orders/hook/config", "hook_config_set"),
    ("DELETE", "/api/orders/hook/config", "hook_config_delete"),
    ("GET", "/api/oms/pvt/orders", "list_orders"),
    ("GET", "/api/oms/pvt/orders/1500000000001-01", "get_order"),
    ("POST", "/api/oms/pvt/orders/1500000000001-01/start-handling", "start_handling"),
    ("POST", "/api/oms/pvt/orders/1500000000001-01/invoice", "invoice"),
    ("PUT", "/api/oms/pvt/orders/1500000000001-01/invoice/NF-1/tracking", "tracking_update"),
    ("POST", "/api/oms/pvt/orders/1500000000001-01/items", "other"),
    ("PUT", "/api/oms/pvt/orders/1500000000001-01", "other"),
    ("GET", "/api/somewhere/else/1500000000001-01", "other"),
])
def test_the_operation_label_names_the_endpoint_never_the_order(method, path, operation):
    assert call_operation(method, path) == operation


def test_recording_a_call_costs_microseconds():
    started = time.perf_counter()
    for _ in range(10_000):
        call_record("vtex", "acme", "get_order", 200, 42)
    assert time.perf_counter() - started < 1.0  # ~200 calls/s in production: far below a millisecond each
    forget_earlier_calls()
