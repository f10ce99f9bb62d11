"""Pruning the history: old committed events and settled orders' timelines go, what an order needs stays."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django_q.models import Failure, Schedule, Success, Task
from django_q.tasks import async_task

from core.job_control import PAUSED_UNTIL, hub_task
from core.models import Store
from core.retention import retention_text
from core.stores import store_connect
from core.vtex.client import FeedItem
from feeds.hook_inbox import hook_call_receive
from feeds.models import FeedConfig, FeedEvent
from feeds.schedules import schedules_setup
from feeds.services import events_store_batch
from orders.models import Alert, OrderSync, SyncAttempt
from orders.services.dispatch import orders_due
from orders.services.prune import history_prune
from orders.tasks import prune_history
from tests.admin import conftest as admin_fixtures
from tests.admin.conftest import action_ran

pytestmark = pytest.mark.django_db
# The least privileged staff group, logged in, as the admin tests make it.
viewer, viewer_client = admin_fixtures.viewer, admin_fixtures.viewer_client

READY = "ready-for-handling"
OLD = timedelta(days=120)  # past the default retention of 90 days
SECRET = "hook-secret-Pr55-never-shown-0001"
CHANGED_AT = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)


@pytest.fixture
def store() -> Store:
    return store_connect(name="shop", account="shop", app_key="vtexappkey-shop-HUB", app_token="app-token-1",
                         base_url="http://127.0.0.1:9", erp_url="http://127.0.0.1:9/erp", hook_secret=SECRET).store


def receive(store: Store, order_id: str, state: str = READY, *, event_id: str = "", commit: bool = True,
            minute: int = 0) -> FeedEvent:
    """One feed item through the feed's own store function; committed unless said otherwise."""
    item = FeedItem(raw={"orderId": order_id, "state": state}, handle=f"handle-{uuid4().hex}",
                    event_id=event_id or f"ev-{order_id}-{state}-{minute}", order_id=order_id, state=state,
                    current_change=CHANGED_AT + timedelta(minutes=minute))
    [event] = events_store_batch(store=store, items=[item])
    if commit:
        FeedEvent.objects.filter(pk=event.pk).update(committed_at=timezone.now())
    return event


def finish(order_id: str, state: str = OrderSync.State.HANDLING_STARTED, **fields: object) -> OrderSync:
    """The order as the dispatcher leaves it, with a timeline of two steps."""
    OrderSync.objects.filter(order_id=order_id).update(state=state, next_attempt_at=None, **fields)
    sync = OrderSync.objects.get(order_id=order_id)
    SyncAttempt.objects.bulk_create([SyncAttempt(order=sync, step=step, outcome="ok")
                                     for step in ("get_order", "erp_send")])
    return sync


def age(order_id: str, by: timedelta = OLD) -> None:
    """Move an order, its timeline and its events `by` into the past."""
    then = timezone.now() - by
    OrderSync.objects.filter(order_id=order_id).update(updated_at=then, created_at=then)
    SyncAttempt.objects.filter(order__order_id=order_id).update(created_at=then)
    FeedEvent.objects.filter(order_id=order_id).update(received_at=then)
    FeedEvent.objects.filter(order_id=order_id, committed_at__isnull=False).update(committed_at=then)


def events_of(order_id: str) -> int:
    return FeedEvent.objects.filter(order_id=order_id).count()


def timeline_of(order_id: str) -> int:
    return SyncAttempt.objects.filter(order__order_id=order_id).count()


# --- what goes ------------------------------------------------------------------------------------------

def test_old_committed_events_and_the_timeline_of_finished_orders_are_removed(store):
    receive(store, "1001-01", "payment-pending")
    receive(store, "1001-01", READY, minute=1)
    finish("1001-01")
    receive(store, "1002-01", READY)
    finish("1002-01", state=OrderSync.State.CANCELED, cancel_pending=True, erp_cancel_sent_at=timezone.now())
    receive(store, "1003-01", "invoiced")  # an order the hub never worked
    for order_id in ("1001-01", "1002-01", "1003-01"):
        age(order_id)

    report = history_prune()

    assert (report.events, report.timeline) == (4, 4)
    assert not FeedEvent.objects.exists() and not SyncAttempt.objects.exists()
    # The orders themselves stay: they are what tells a late event that the work is done.
    assert set(OrderSync.objects.values_list("order_id", "state")) == {
        ("1001-01", "handling_started"), ("1002-01", "canceled")}
    assert report.finished and "removed 4 event(s), 4 timeline row(s)" in report.summary()


# --- what stays -----------------------------------------------------------------------------------------

def test_what_an_order_still_needs_and_recent_history_are_kept(store):
    receive(store, "2001-01", commit=False)  # its handle is owed to VTEX, whatever the order
    finish("2001-01")
    receive(store, "2002-01")  # new, its work due
    receive(store, "2003-01")
    finish("2003-01", state=OrderSync.State.NEEDS_ATTENTION)  # parked for staff
    receive(store, "2004-01")
    finish("2004-01", cancel_pending=True)  # a cancel notice owed to the ERP
    receive(store, "2005-01")
    finish("2005-01", claimed_until=timezone.now() + timedelta(minutes=1))  # a worker holds it (staff's resend)
    receive(store, "2006-01", READY, commit=False)
    FeedEvent.objects.filter(order_id="2006-01").update(handle="", outcome=FeedEvent.Outcome.FAILED)
    for order_id in ("2001-01", "2002-01", "2003-01", "2004-01", "2005-01", "2006-01"):
        age(order_id)
    OrderSync.objects.filter(order_id="2006-01").delete()  # its event failed before the order was recorded
    receive(store, "2007-01")
    finish("2007-01")
    age("2007-01", by=timedelta(days=30))  # finished within the retention
    receive(store, "2008-01")
    finish("2008-01")
    age("2008-01")
    receive(store, "2008-01", "invoiced", minute=2)  # a recent event of an old, finished order

    report = history_prune()

    kept = {order_id: (events_of(order_id), timeline_of(order_id))
            for order_id in ("2001-01", "2002-01", "2003-01", "2004-01", "2005-01", "2006-01", "2007-01")}
    assert kept == {"2001-01": (1, 0), "2002-01": (1, 0), "2003-01": (1, 2), "2004-01": (1, 2),
                    "2005-01": (1, 2), "2006-01": (1, 0), "2007-01": (1, 2)}
    assert (report.events, report.timeline) == (1, 2 + 2)  # 2008-01's old event; 2001-01's and 2008-01's steps
    assert list(FeedEvent.objects.filter(order_id="2008-01").values_list("state", flat=True)) == ["invoiced"]


def test_the_retention_follows_the_setting_but_never_reaches_into_vtex_redelivery_window(store, settings):
    receive(store, "3001-01")
    finish("3001-01")
    age("3001-01")
    settings.HUB_RETENTION_DAYS = 200
    assert (history_prune().events, events_of("3001-01")) == (0, 1)

    settings.HUB_RETENTION_DAYS = 1
    FeedConfig.objects.filter(store=store).update(retention_seconds=7 * 24 * 3600)  # VTEX may redeliver for 7 days
    receive(store, "3002-01")
    finish("3002-01")
    age("3002-01", by=timedelta(days=5))

    report = history_prune()

    assert (events_of("3001-01"), events_of("3002-01")) == (0, 1)
    assert timeline_of("3002-01") == 0  # the timeline follows the setting alone
    assert report.events_cutoff < report.cutoff


# --- the dedupe after pruning ---------------------------------------------------------------------------

def _hook(store: Store, order_id: str) -> str:
    body = json.dumps({"Domain": "Fulfillment", "OrderId": order_id, "State": READY,
                       "LastChange": "2026-03-01T10:00:00Z", "CurrentChange": "2026-03-01T10:05:00Z",
                       "Origin": {"Account": "shop", "Key": "vtexappkey-shop-HUB"}}).encode()
    answer = hook_call_receive(store_name=store.name, method="POST", token=SECRET, content_length=len(body),
                               read=io.BytesIO(body).read)
    assert answer.status == 200, answer.body
    return answer.body["outcome"]


@pytest.mark.parametrize("source", ["feed", "hook"])
def test_an_old_event_delivered_again_after_pruning_does_not_dispatch_the_order_again(store, source):
    deliver = (lambda: receive(store, "4001-01", event_id="ev-4001").outcome) if source == "feed" \
        else (lambda: _hook(store, "4001-01"))
    assert deliver() == FeedEvent.Outcome.QUEUED
    assert deliver() == FeedEvent.Outcome.DUPLICATE  # recognised by its first sighting
    finish("4001-01")
    age("4001-01")
    assert history_prune().events == 2

    # The first sighting is gone, so the event is new again; the order row says the work is done.
    assert deliver() == FeedEvent.Outcome.IGNORED
    sync = OrderSync.objects.get(order_id="4001-01")
    assert (sync.state, sync.next_attempt_at) == (OrderSync.State.HANDLING_STARTED, None)
    assert orders_due() == []
    assert SyncAttempt.objects.filter(order=sync).get().message.startswith("ready-for-handling event ignored")


def test_repeats_go_before_their_first_sighting_and_a_young_repeat_keeps_it(store):
    first = receive(store, "5001-01", event_id="ev-5001")
    repeat = receive(store, "5001-01", event_id="ev-5001")
    receive(store, "5002-01", event_id="ev-5002")
    for order_id in ("5001-01", "5002-01"):
        finish(order_id)
        age(order_id)
    young = receive(store, "5002-01", event_id="ev-5002")  # delivered again today: still pointing at the original
    assert (repeat.duplicate_of_id, young.outcome) == (first.pk, FeedEvent.Outcome.DUPLICATE)

    assert history_prune().events == 2

    assert events_of("5001-01") == 0
    assert FeedEvent.objects.filter(order_id="5002-01").count() == 2
    assert FeedEvent.objects.get(pk=young.pk).duplicate_of_id is not None  # it still points at its original


# --- batches, deadline, dry run -------------------------------------------------------------------------

def test_it_deletes_in_batches_and_a_deadline_leaves_the_rest_to_the_next_run(store):
    for n in range(12):
        receive(store, f"6{n:03d}-01", "payment-pending")
    FeedEvent.objects.update(received_at=timezone.now() - OLD)

    first = history_prune(deadline=time.monotonic(), batch_size=5)  # past its deadline: one batch only
    assert (first.events, first.batches, first.finished) == (5, 1, False)
    assert "the next run goes on" in first.summary()

    rest = history_prune(batch_size=5)
    assert (rest.events, rest.batches, rest.finished) == (7, 2, True)
    assert not FeedEvent.objects.exists()


def test_a_dry_run_counts_the_same_rows_and_changes_nothing(store, capsys):
    receive(store, "7001-01", event_id="ev-7001")
    receive(store, "7001-01", event_id="ev-7001")  # a repeat: the dry run counts its original as removable too
    finish("7001-01")
    age("7001-01")
    receive(store, "7002-01")  # work left: kept
    age("7002-01")
    Alert.objects.create(store=store, kind=Alert.Kind.JOBS, severity="warning", message="late", state="resolved",
                         first_at=timezone.now() - OLD, resolved_at=timezone.now() - OLD)
    before = (FeedEvent.objects.count(), SyncAttempt.objects.count(), Alert.objects.count())

    call_command("prune_history", "--dry-run")
    dry = history_prune(dry_run=True)

    assert capsys.readouterr().out.startswith("would remove 2 event(s), 2 timeline row(s), 1 resolved alert(s)")
    assert (FeedEvent.objects.count(), SyncAttempt.objects.count(), Alert.objects.count()) == before
    real = history_prune()
    assert (dry.events, dry.timeline, dry.alerts) == (real.events, real.timeline, real.alerts) == (2, 2, 1)


def test_resolved_alerts_and_failed_job_records_past_the_retention_go(store):
    old, now = timezone.now() - OLD, timezone.now()

    def alert(kind: str, state: str, resolved_at: datetime | None) -> Alert:
        return Alert.objects.create(store=store, kind=kind, severity="warning", message="m", state=state,
                                    first_at=old, resolved_at=resolved_at)

    def task(success: bool, stopped: datetime) -> Task:
        return Task.objects.create(id=uuid4().hex, name=uuid4().hex, func="orders.tasks.reconcile_orders",
                                   started=stopped, stopped=stopped, success=success, result="r")

    gone = [alert(Alert.Kind.JOBS, "resolved", old).pk, task(False, old).pk]
    kept = [alert(Alert.Kind.ERP_FAILING, "firing", None).pk, alert(Alert.Kind.RETENTION, "resolved", now).pk]
    recent_failure, old_success = task(False, now).pk, task(True, old).pk  # successes: Q_CLUSTER's save_limit

    report = history_prune()

    assert (report.alerts, report.failed_tasks) == (1, 1)
    assert set(Alert.objects.values_list("pk", flat=True)) == set(kept)
    assert set(Task.objects.values_list("pk", flat=True)) == {recent_failure, old_success}
    assert not Failure.objects.filter(pk__in=gone).exists()


# --- the job, the command, the admin --------------------------------------------------------------------

def test_the_daily_job_is_a_hub_task_with_its_schedule_and_records_what_it_removed(store):
    schedules_setup()
    schedule = Schedule.objects.get(name="prune_history")
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == ("orders.tasks.prune_history", "I", 24 * 60)
    assert hub_task(schedule.func) is prune_history  # the cluster's allowlist takes it
    receive(store, "8001-01", "invoiced")
    age("8001-01")
    assert retention_text() == "History older than 90 days is pruned daily (no run among the job records)."

    async_task("orders.tasks.prune_history")  # run by the cluster's code (Q_CLUSTER sync in the tests)

    result = Success.objects.get(func="orders.tasks.prune_history").result
    assert result.startswith("removed 1 event(s), 0 timeline row(s)")
    assert retention_text().startswith("History older than 90 days is pruned daily (last run ")
    assert result in retention_text()
    assert prune_history().startswith("removed 0 event(s)")


def test_a_run_cut_short_by_the_job_budget_queues_the_next_one_unless_paused(store, settings):
    schedules_setup()
    settings.HUB_JOB_BUDGET_SECONDS = 0  # every run stops after its first batch
    receive(store, "8201-01", "invoiced")
    age("8201-01")

    async_task("orders.tasks.prune_history")

    results = list(Success.objects.filter(func="orders.tasks.prune_history").order_by("started")
                   .values_list("result", flat=True))
    assert [r.split(" older")[0] for r in results] == [
        "removed 1 event(s), 0 timeline row(s), 0 resolved alert(s), 0 failed job record(s)",  # queued the next
        "removed 0 event(s), 0 timeline row(s), 0 resolved alert(s), 0 failed job record(s)"]
    assert "the next run goes on" in results[0]

    receive(store, "8202-01", "invoiced")
    age("8202-01")
    Schedule.objects.filter(name="prune_history").update(next_run=PAUSED_UNTIL)
    assert "the next run goes on" in prune_history()
    assert Success.objects.filter(func="orders.tasks.prune_history").count() == 2  # nothing queued


def test_the_command_removes_what_the_job_would(store, capsys):
    receive(store, "8101-01", "invoiced")
    age("8101-01")
    call_command("prune_history")
    assert capsys.readouterr().out.startswith("removed 1 event(s)")
    assert not FeedEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_event_and_order_lists_show_the_retention(viewer_client: Client, settings):
    settings.HUB_RETENTION_DAYS = 30
    async_task("orders.tasks.prune_history")
    for url in ("/admin/feeds/feedevent/", "/admin/orders/ordersync/"):
        page = viewer_client.get(url).content.decode()
        assert "History older than 30 days is pruned daily (last run " in page, url
        assert "removed 0 event(s), 0 timeline row(s)" in page


@pytest.mark.django_db(transaction=True)
def test_a_viewer_cannot_change_the_retention_or_its_schedule(viewer_client: Client, settings):
    schedules_setup()
    schedule = Schedule.objects.get(name="prune_history")
    before = Schedule.objects.filter(pk=schedule.pk).values().get()

    # The retention is a setting (HUB_RETENTION_DAYS): no admin page edits it. The job's schedule is read-only
    # here for everyone, and pausing it needs core.run_jobs, which a Viewer does not have.
    edit = viewer_client.post(f"/admin/django_q/schedule/{schedule.pk}/change/",
                              {"func": "orders.tasks.prune_history", "minutes": 1})
    pause = viewer_client.post("/admin/django_q/schedule/", {"action": "pause", "_selected_action": [schedule.pk]})

    assert edit.status_code == 403
    assert not action_ran(pause)
    assert Schedule.objects.filter(pk=schedule.pk).values().get() == before
    assert "History older than 90 days" in viewer_client.get("/admin/feeds/feedevent/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_event_list_filters_and_searches_through_indexed_columns(viewer_client: Client):
    shop = store_connect(name="shop", account="shop", app_key="k", app_token="t", base_url="http://127.0.0.1:9",
                         erp_url="http://127.0.0.1:9/erp").store
    receive(shop, "9001-01", "invoiced", event_id="ev-9001")
    receive(shop, "9002-01", "payment-pending", event_id="ev-9002")
    FeedEvent.objects.filter(order_id="9002-01").update(received_at=timezone.now() - timedelta(days=3))

    def listed(query: str) -> set[str]:
        response = viewer_client.get(f"/admin/feeds/feedevent/?{query}")
        assert response.status_code == 200, query
        return {event.order_id for event in response.context["cl"].result_list}

    assert listed("state=invoiced") == {"9001-01"}
    assert listed("received=24h") == {"9001-01"}
    assert listed("received=7d") == {"9001-01", "9002-01"}
    assert listed("q=9002") == {"9002-01"}  # an order id's start
    assert listed("q=ev-9001") == {"9001-01"}  # an exact event id
