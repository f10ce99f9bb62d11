"""Reconciliation: VTEX's List orders finds the ready-for-handling orders that the feed and the hook both lost."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.models import Schedule

from core.models import Store
from core.stores import store_connect
from feeds.hook_config import hook_config_push
from feeds.models import FeedEvent
from feeds.schedules import schedules_setup
from orders.models import OrderSync, SyncAttempt
from orders.services import reconcile
from orders.services.staff import order_act
from orders.tasks import reconcile_orders
from tests.helpers import keys_by_order, run_sync, start_handling_204, states

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "hook-secret-Rc47-never-shown-0099"
LIST = "/api/oms/pvt/orders"


@pytest.fixture
def no_min_age(settings):
    settings.HUB_RECONCILE_MIN_AGE_MINUTES = 0


def lose_events(sandbox, *order_ids: str) -> list[str]:
    """Create ready-for-handling orders whose change never reaches the feed."""
    sandbox.drop_feed_events_for |= set(order_ids)
    for order_id in order_ids:
        sandbox.create_order(order_id=order_id)
    return list(order_ids)


def list_calls(sandbox) -> list[dict[str, str]]:
    return [request.query for request in sandbox.requests if request.path == LIST]


def found_rows(order_id: str) -> list[SyncAttempt]:
    return list(SyncAttempt.objects.filter(order__order_id=order_id, triggered_by="reconcile"))


def test_an_order_lost_by_the_feed_and_the_hook_is_found_and_handled_once(
        sandbox, store, live_server, settings, no_min_age):
    settings.HUB_PUBLIC_URL = live_server.url
    store = store_connect(name=store.name, hook_secret=SECRET).store
    assert hook_config_push(store=store, by="test").ok
    seen = sandbox.create_order()  # the hook and the feed deliver this one
    sandbox.hook_drop_rate = 1.0
    [lost] = lose_events(sandbox, "1999999999001-01")
    sandbox.hook_drop_rate = 0.0
    assert sandbox.wait_for_hooks(30)
    assert {(d.order_id, d.outcome) for d in sandbox.hook_deliveries if d.order_id == lost} == {(lost, "dropped")}

    run_sync()

    assert states() == {seen: "handling_started"}  # the hub never heard of the lost order
    assert not FeedEvent.objects.filter(order_id=lost).exists()

    assert reconcile_orders() == "1 store(s) checked, 1 order(s) found"
    run_sync()

    assert states() == {seen: "handling_started", lost: "handling_started"}
    assert [d.order_id for d in sandbox.erp_deliveries if d.event == "order.ready"].count(lost) == 1
    assert len(keys_by_order(sandbox)[lost]) == 1
    assert start_handling_204(sandbox) == {seen: 1, lost: 1}
    [row] = found_rows(lost)
    assert (row.step, row.outcome) == (SyncAttempt.Step.EVENT, SyncAttempt.Outcome.INFO)
    assert row.message.startswith("found by reconciliation")
    assert not found_rows(seen)
    [query] = list_calls(sandbox)
    assert query["f_status"] == "ready-for-handling" and query["per_page"] == "100" and query["page"] == "1"
    assert query["f_creationDate"].startswith("creationDate:[")


def test_running_it_twice_creates_nothing_twice(sandbox, store, no_min_age):
    lost = lose_events(sandbox, "1999999999001-01", "1999999999002-01")

    first, second = reconcile_orders(), reconcile_orders()

    assert (first, second) == ("1 store(s) checked, 2 order(s) found", "1 store(s) checked, 0 order(s) found")
    assert sorted(OrderSync.objects.values_list("order_id", flat=True)) == lost
    assert {order_id: len(found_rows(order_id)) for order_id in lost} == {order_id: 1 for order_id in lost}


def test_orders_the_hub_handles_or_parked_are_not_touched(sandbox, store, no_min_age):
    sandbox.erp_refuse_customer_data = True
    parked, resolved, waiting, stuck = sandbox.create_orders(4)
    run_sync()
    assert set(states().values()) == {"needs_attention"}  # VTEX still lists all four as ready-for-handling
    order_act(sync_id=OrderSync.objects.get(order_id=resolved).pk, action="resolve", by="vera", reason="by phone")
    later = timezone.now() + timedelta(hours=1)
    OrderSync.objects.filter(order_id=waiting).update(state="new", next_attempt_at=later)  # in a backoff
    OrderSync.objects.filter(order_id=stuck).update(state="new", next_attempt_at=None)  # no work scheduled
    before = {row["order_id"]: row for row in OrderSync.objects.values()}
    timeline = SyncAttempt.objects.count()

    assert reconcile_orders() == "1 store(s) checked, 1 order(s) found"

    after = {row["order_id"]: row for row in OrderSync.objects.values()}
    for order_id in (parked, resolved, waiting):
        assert after[order_id] == before[order_id]
    assert after[stuck]["state"] == "new" and after[stuck]["next_attempt_at"] is not None
    assert SyncAttempt.objects.count() == timeline + 1
    [row] = found_rows(stuck)
    assert "had no work scheduled" in row.message


def test_it_pages_through_the_list_and_stops_at_its_page_cap(sandbox, store, no_min_age, monkeypatch):
    monkeypatch.setattr(reconcile, "PER_PAGE", 10)
    lost = lose_events(sandbox, *(f"19999999990{n:02d}-01" for n in range(25)))

    assert reconcile_orders() == "1 store(s) checked, 25 order(s) found"
    assert [(query["page"], query["per_page"]) for query in list_calls(sandbox)] == [("1", "10"), ("2", "10"),
                                                                                      ("3", "10")]
    assert sorted(OrderSync.objects.values_list("order_id", flat=True)) == lost

    OrderSync.objects.all().delete()
    monkeypatch.setattr(reconcile, "MAX_PAGES", 2)
    assert reconcile_orders() == "1 store(s) checked, 20 order(s) found"
    assert len(list_calls(sandbox)) == 3 + 2
    run_sync()  # the found orders leave ready-for-handling: the next run reaches the rest
    assert reconcile_orders() == "1 store(s) checked, 5 order(s) found"


def test_orders_younger_than_the_minimum_age_are_left_to_the_feed_and_the_hook(sandbox, store, settings):
    settings.HUB_RECONCILE_MIN_AGE_MINUTES = 10
    lose_events(sandbox, "1999999999001-01")

    assert reconcile_orders() == "1 store(s) checked, 0 order(s) found"

    assert not OrderSync.objects.exists()
    [query] = list_calls(sandbox)
    upper = query["f_creationDate"].split(" TO ")[1].rstrip("]")
    assert upper < (timezone.now() - timedelta(minutes=9)).strftime("%Y-%m-%dT%H:%M:%S")


def test_a_429_pauses_the_store_and_the_job_ends_cleanly(sandbox, store, no_min_age):
    lose_events(sandbox, "1999999999001-01")
    sandbox.retry_after_seconds = 120
    sandbox.fail_next("order_list", 429)

    assert reconcile_orders() == "0 store(s) checked, 0 order(s) found, 1 paused by VTEX (429)"

    paused_until = Store.objects.get(pk=store.pk).vtex_paused_until
    assert paused_until is not None and paused_until > timezone.now() + timedelta(seconds=100)
    # While paused, no call goes to the account, and nothing is found.
    assert reconcile_orders() == "0 store(s) checked, 0 order(s) found, 1 paused by VTEX (429)"
    assert len(list_calls(sandbox)) == 1
    assert not OrderSync.objects.exists()


def test_the_command_reconciles_one_store_and_refuses_unknown_ones(sandbox, store, no_min_age, capsys):
    [lost] = lose_events(sandbox, "1999999999001-01")

    call_command("reconcile", "--store", "acme")

    assert capsys.readouterr().out.splitlines() == [f"acme: found {lost}", "1 store(s) checked, 1 order(s) found"]
    with pytest.raises(CommandError, match="no enabled store named nosuch"):
        call_command("reconcile", "--store", "nosuch")


def test_the_schedule_runs_every_hub_reconcile_minutes(transactional_db, settings):
    settings.HUB_RECONCILE_MINUTES = 7
    schedules_setup()
    schedule = Schedule.objects.get(name="reconcile_orders")
    assert (schedule.func, schedule.minutes) == ("orders.tasks.reconcile_orders", 7)
    del settings.HUB_RECONCILE_MINUTES  # unset: the default
    schedules_setup()
    assert Schedule.objects.get(name="reconcile_orders").minutes == 15
