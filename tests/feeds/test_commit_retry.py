"""Failed feed commits are retried while their handles live, and `sync` is idle only when VTEX holds nothing.

The sandbox's feed hides a read item for the visibility timeout (5 s here, and the same in the store's
FeedConfig) and shows it again afterwards with a new handle, as VTEX's SQS queue does.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from orders.cycle import sync_until_idle
from feeds.handles import handles_owed
from feeds.models import FeedConfig, FeedEvent
from orders.models import OrderSync
from sandbox.server import Sandbox
from tests.conftest import TOKEN
from tests.helpers import keys_by_order, start_handling_204, states

pytestmark = pytest.mark.django_db(transaction=True)
VISIBILITY = 5
SEEDS = [1, 2, 3, 4, 5]


@pytest.fixture
def sandbox(request):
    """Overrides the shared one (the `store` fixture connects to it): a short visibility timeout, a seed."""
    server = Sandbox(app_token=TOKEN, seed=getattr(request, "param", 7), shuffle=True,
                     visibility_timeout=VISIBILITY).start()
    yield server
    server.stop()


@pytest.fixture
def short_store(store):
    FeedConfig.objects.filter(store=store).update(visibility_timeout_seconds=VISIBILITY)
    return store


def _commits(sandbox: Sandbox) -> list[tuple[int, bytes]]:
    return [(r.status, r.body) for r in sandbox.requests if r.method == "POST" and r.path == "/api/orders/feed"]


def _assert_every_order_handled_once(sandbox: Sandbox, order_ids: list[str]) -> None:
    assert states() == {order_id: "handling_started" for order_id in order_ids}
    assert start_handling_204(sandbox) == {order_id: 1 for order_id in order_ids}
    assert {order_id: len(keys) for order_id, keys in keys_by_order(sandbox).items()} == {o: 1 for o in order_ids}
    assert Counter(d.order_id for d in sandbox.erp_deliveries if not d.replay) == {o: 1 for o in order_ids}


def _assert_every_handle_settled(sandbox: Sandbox) -> None:
    """Each stored handle was committed, or its item came back and the repeat's handle was committed."""
    committed = set(sandbox.committed_handles)
    for event in FeedEvent.objects.exclude(handle=""):
        if event.committed_at is not None:
            assert event.handle in committed
        else:
            assert FeedEvent.objects.filter(event_id=event.event_id, received_at__gt=event.received_at,
                                            committed_at__isnull=False).exists(), f"{event} was never committed"


@pytest.mark.parametrize("sandbox", SEEDS, indirect=True)
def test_with_commits_failing_sync_is_idle_only_once_vtex_holds_nothing(sandbox, short_store):
    sandbox.commit_fault_rate = 0.5
    sandbox.duplicate_rate = 0.2  # VTEX's at-least-once delivery, as in the runs
    order_ids = sandbox.create_orders(60)

    result = sync_until_idle(timeout=150)

    queue = sandbox.stats()  # right away: idle must mean VTEX holds nothing, not "will soon"
    assert result.idle, result.summary()
    assert (queue["queue"], queue["queue_hidden"]) == (0, 0)
    assert [status for status, _ in _commits(sandbox)].count(503) >= 3  # the faults did happen
    assert sum(report.commit_retries for report in result.pulls) >= 1
    _assert_every_order_handled_once(sandbox, order_ids)
    _assert_every_handle_settled(sandbox)
    assert handles_owed() == 0


def test_a_failed_commit_is_retried_at_once_with_the_same_handles(sandbox, short_store):
    [order_id] = sandbox.create_orders(1)
    sandbox.fail_next("feed_commit", 503, times=2)

    result = sync_until_idle(timeout=60)

    assert result.idle, result.summary()
    commits = _commits(sandbox)
    assert [status for status, _ in commits[:3]] == [503, 503, 200]
    assert commits[0][1] == commits[1][1] == commits[2][1]  # the same handles, before they died
    assert sandbox.queue_size() == 0
    [event] = FeedEvent.objects.filter(state="ready-for-handling")  # not shown again: no duplicate
    assert event.committed_at and event.handle in sandbox.committed_handles
    _assert_every_order_handled_once(sandbox, [order_id])


def test_a_round_that_reads_nothing_while_an_item_may_come_back_is_not_idle(sandbox, short_store):
    [order_id] = sandbox.create_orders(1)
    sandbox.commit_fault_rate = 1.0
    failing = sync_until_idle(timeout=1.5)
    assert not failing.idle
    assert failing.owed >= 1 and "not committed to VTEX" in failing.summary()
    [first] = FeedEvent.objects.filter(state="ready-for-handling")
    # The hub retried until the handle died (sped up here); VTEX hides the item a few seconds more.
    FeedEvent.objects.filter(committed_at__isnull=True).update(
        received_at=timezone.now() - timedelta(seconds=VISIBILITY + 3))
    assert sandbox.stats()["queue_hidden"] >= 1
    sandbox.commit_fault_rate = 0.0

    result = sync_until_idle(timeout=60)

    assert result.idle, result.summary()
    assert sandbox.queue_size() == 0
    # The window: a round read nothing (the item was hidden) and `sync` went on; a later round got it back.
    rounds = [(report.read == 0 and not report.errors, report.duplicates) for report in result.pulls]
    quiet = [n for n, (nothing, _) in enumerate(rounds) if nothing]
    back = [n for n, (_, duplicates) in enumerate(rounds) if duplicates]
    assert quiet and back and quiet[0] < back[-1], [report.summary() for report in result.pulls]
    first.refresh_from_db()
    assert first.committed_at is None and first.handle not in sandbox.committed_handles
    assert FeedEvent.objects.filter(event_id=first.event_id, outcome="duplicate", committed_at__isnull=False).exists()
    _assert_every_order_handled_once(sandbox, [order_id])
    assert handles_owed() == 0


def test_a_new_sync_commits_the_handles_an_earlier_run_stored_but_could_not(sandbox, store):
    # The store keeps VTEX's default 250 s timeout: the stored handles are still live for the second run.
    sandbox.feed_config = {"filter": sandbox.feed_config["filter"],
                           "queue": {"visibilityTimeoutInSeconds": 250, "MessageRetentionPeriodInSeconds": 345600}}
    order_ids = sandbox.create_orders(3)
    sandbox.commit_fault_rate = 1.0
    first_run = sync_until_idle(timeout=2)  # gives up, as a run that crashed or timed out
    assert not first_run.idle
    stored = dict(FeedEvent.objects.filter(state="ready-for-handling").values_list("handle", "order_id"))
    assert len(stored) == 3 and not FeedEvent.objects.filter(committed_at__isnull=False).exists()
    assert sandbox.stats()["queue_hidden"] == 3
    reads_before = sum(1 for r in sandbox.requests if r.method == "GET" and r.path == "/api/orders/feed")

    sandbox.commit_fault_rate = 0.0
    result = sync_until_idle(timeout=60)

    assert result.idle, result.summary()
    assert set(stored) <= set(sandbox.committed_handles)  # the earlier run's own handles
    assert FeedEvent.objects.filter(outcome="duplicate").count() == 0  # nothing had to come back
    assert sandbox.queue_size() == 0
    assert sum(1 for r in sandbox.requests if r.method == "GET" and r.path == "/api/orders/feed") > reads_before
    _assert_every_order_handled_once(sandbox, order_ids)
    assert OrderSync.objects.count() == 3
