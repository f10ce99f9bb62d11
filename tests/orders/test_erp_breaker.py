"""The ERP circuit breaker: an ERP outage pauses dispatch to it, orders wait without using up their attempts,
probes go out after the pause, and the dashboard says so."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from core.models import ErpConnection
from feeds.services import feeds_pull
from orders.dashboard import store_healths
from orders.models import OrderSync, SyncAttempt
from orders.services.dispatch import orders_dispatch, orders_due
from tests.helpers import keys_by_order, run_sync, start_handling_204, states

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def breaker(settings):
    settings.HUB_ERP_BREAKER_FAILURES = 3
    settings.HUB_ERP_BREAKER_SECONDS = 2.0
    settings.HUB_RETRY_BASE_SECONDS = 0.1
    settings.HUB_RETRY_MAX_SECONDS = 0.5
    settings.HUB_MAX_ATTEMPTS = 4
    return settings


def _erp_posts(sandbox) -> list:
    return [r for r in sandbox.requests if r.path.startswith("/erp/")]


def test_repeated_erp_failures_open_the_breaker_and_orders_wait_without_being_parked(sandbox, store, breaker):
    order_ids = sandbox.create_orders(6)
    sandbox.fail_next("erp", 503, times=1000)  # the ERP is down until told otherwise

    # Work for a few seconds: the breaker opens after 3 failures and every order waits on it.
    feeds_pull(deadline=time.monotonic() + 10, until_empty=True, readers=1)
    orders_dispatch(deadline=time.monotonic() + 1.5, stop_when=lambda: True)

    erp = ErpConnection.objects.get(store=store)
    assert erp.breaker_failures >= 3 and erp.breaker_open_until > timezone.now()
    posts_while_open = len(_erp_posts(sandbox))
    assert posts_while_open <= 3 + breaker.HUB_DISPATCH_CONCURRENCY  # the ones in flight when it opened
    assert orders_due() == []  # every order that needs the ERP waits for the breaker
    assert not OrderSync.objects.filter(state=OrderSync.State.NEEDS_ATTENTION).exists()
    waiting = SyncAttempt.objects.filter(step="erp_send", outcome="retry", message__contains="times in a row")
    assert waiting.exists()

    [health] = store_healths(now=timezone.now())
    assert health.verdict.status == "paused"
    assert "circuit breaker open" in health.verdict.cause

    # Still down: the probe after the pause fails and opens it again, without parking anything.
    time.sleep(2.1)
    orders_dispatch(deadline=time.monotonic() + 1.0, stop_when=lambda: True)
    assert len(_erp_posts(sandbox)) == posts_while_open + 1  # one probe, not every due order at once
    assert ErpConnection.objects.get(store=store).breaker_open_until > timezone.now()
    assert not OrderSync.objects.filter(state=OrderSync.State.NEEDS_ATTENTION).exists()

    # The ERP is back: the next probe succeeds, the breaker closes and every order flows.
    with sandbox._lock:  # the sandbox has no "clear faults" call: drop the rest of the scripted 503s
        sandbox._scripted["erp"].clear()
    time.sleep(2.1)
    run_sync(timeout=60)

    erp = ErpConnection.objects.get(store=store)
    assert (erp.breaker_failures, erp.breaker_open_until) == (0, None)
    assert states() == {o: "handling_started" for o in order_ids}
    assert all(len(keys) == 1 for keys in keys_by_order(sandbox).values())
    assert start_handling_204(sandbox) == {o: 1 for o in order_ids}


def test_failures_below_the_threshold_are_ordinary_retries(sandbox, store, breaker):
    [order_id] = sandbox.create_orders(1)
    sandbox.fail_next("erp", 503, times=2)

    run_sync()

    assert states() == {order_id: "handling_started"}
    erp = ErpConnection.objects.get(store=store)
    assert (erp.breaker_failures, erp.breaker_open_until) == (0, None)  # the success closed it again
    retries = SyncAttempt.objects.filter(step="erp_send", outcome="retry")
    assert retries.count() == 2 and not retries.filter(message__contains="times in a row").exists()
