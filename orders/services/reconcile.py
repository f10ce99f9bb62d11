"""Reconciliation: ask VTEX which orders wait in ready-for-handling, and queue the ones no event brought.

The feed and the hook can both lose an event (retention, an outage, a deleted configuration). VTEX's List
orders is a search index about 4 minutes behind that VTEX says not to integrate on, so it is only a safety
net: every HUB_RECONCILE_MINUTES, at most MAX_PAGES pages per store, orders older than
HUB_RECONCILE_MIN_AGE_MINUTES (younger ones may still be on their way through the feed or the hook).
A found order enters the normal path exactly as a ready-for-handling event would put it there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.models import Store
from core.vtex.client import ListedOrder, VtexError, VtexUnavailable
from core.vtex_account import store_pause, vtex_client
from orders.models import OrderSync, SyncAttempt
from orders.services.events import READY, order_note_event
from orders.services.process import WORKING_STATES

log = logging.getLogger("hub.orders")

MAX_PAGES = 10  # x PER_PAGE = 1,000 orders a store per run: VTEX asks for sparing use (and serves 30 pages at most)
PER_PAGE = 100  # VTEX's largest page
# Orders created this long before the store was connected are looked at too: an order is created before it
# becomes ready (payment, window-to-cancel), and a boleto takes days to be paid. Older ones, still waiting in
# ready-for-handling, were another integration's to handle: the hub does not send a store's history to the ERP.
BEFORE_CONNECTED = timedelta(days=3)
TRIGGERED_BY = "reconcile"


@dataclass
class ReconcileReport:
    checked: list[str] = field(default_factory=list)  # stores whose list was read (to the end or to MAX_PAGES)
    found: list[tuple[str, str]] = field(default_factory=list)  # (store name, order id) queued
    paused: list[str] = field(default_factory=list)  # stores not asked, or left mid-way, for a 429
    failed: dict[str, str] = field(default_factory=dict)  # store name -> why its list could not be read

    def summary(self) -> str:
        text = f"{len(self.checked)} store(s) checked, {len(self.found)} order(s) found"
        if self.paused:
            text += f", {len(self.paused)} paused by VTEX (429)"
        if self.failed:
            text += f", {len(self.failed)} failed: " + "; ".join(f"{name}: {why}" for name, why in self.failed.items())
        return text


def min_age() -> timedelta:
    return timedelta(minutes=float(getattr(settings, "HUB_RECONCILE_MIN_AGE_MINUTES", 10)))


def orders_reconcile(*, store_names: Iterable[str] | None = None) -> ReconcileReport:
    """Reconcile every enabled store (or the named ones), one after the other."""
    stores = Store.objects.filter(enabled=True).order_by("name")
    if store_names is not None:
        stores = stores.filter(name__in=list(store_names))
    report = ReconcileReport()
    for store in stores:
        store_reconcile(store=store, report=report)
    return report


def store_reconcile(*, store: Store, report: ReconcileReport) -> None:
    """Page through the store's ready-for-handling orders and queue the unknown ones, page by page.

    A 429 pauses the whole account (the one pause the feed and the dispatcher honour too) and ends this
    store's run; what earlier pages found is kept. The next run starts again from page 1.
    """
    now = timezone.now()
    if Store.objects.filter(pk=store.pk, vtex_paused_until__gt=now).exists():
        report.paused.append(store.name)
        return
    ready_before = now - min_age()
    client = vtex_client(store)
    try:
        page = 1
        while page <= MAX_PAGES:
            # The creation range is fixed for the run: later orders cannot shift the pages while we read them.
            listed = client.order_list(status=READY, page=page, per_page=PER_PAGE,
                                       created_from=store.created_at - BEFORE_CONNECTED, created_to=ready_before)
            found = listed_orders_queue(store=store, orders=listed.orders, ready_before=ready_before)
            report.found += [(store.name, order_id) for order_id in found]
            if not listed.orders or page >= listed.pages:
                break
            page += 1
        else:
            log.warning("store %s: reconciliation stopped after %d pages of ready-for-handling orders",
                        store.name, MAX_PAGES)
    except VtexError as exc:
        if isinstance(exc, VtexUnavailable) and exc.rate_limited:
            store_pause(store_id=store.pk, retry_after=exc.retry_after)
            report.paused.append(store.name)
        else:
            report.failed[store.name] = str(exc)[:300]
        log.warning("store %s: reconciliation stopped: %s", store.name, exc)
        return
    finally:
        client.close()
    report.checked.append(store.name)


def listed_orders_queue(*, store: Store, orders: list[ListedOrder], ready_before: datetime) -> list[str]:
    """Queue the listed orders the hub has no work for; returns their ids. One transaction per order."""
    # VTEX's list has no lastChange in its documented rows; when one comes, it says how long the order waited.
    candidates = {order.order_id: order for order in orders
                  if order.status == READY and all(when is None or when <= ready_before
                                                   for when in (order.last_change, order.creation_date))}
    known = OrderSync.objects.filter(store=store, order_id__in=list(candidates))
    for sync in known.only("order_id", "state", "next_attempt_at", "claimed_until"):
        if not _without_work(sync, now=timezone.now()):
            del candidates[sync.order_id]  # handled, parked for staff, or with work already scheduled
    return [order.order_id for order in candidates.values() if order_found(store=store, order=order)]


def _without_work(sync: OrderSync, *, now: datetime) -> bool:
    """A working order that nothing will come back to: no next attempt and no worker holding it."""
    held = sync.claimed_until is not None and sync.claimed_until > now
    return sync.state in WORKING_STATES and sync.next_attempt_at is None and not held


@transaction.atomic
def order_found(*, store: Store, order: ListedOrder) -> bool:
    """Put one order the events missed on the dispatch path, as its ready-for-handling event would have.

    The store row is locked, as the feed and the hook lock it while they store events: an event stored
    this instant and this run cannot both count the order as new. False when it turned out to be known.
    """
    Store.objects.select_for_update().filter(pk=store.pk).values_list("pk", flat=True).first()
    sync = (OrderSync.objects.select_for_update().filter(store=store, order_id=order.order_id)
            .only("pk", "state", "next_attempt_at", "claimed_until").first())
    if sync is not None and not _without_work(sync, now=timezone.now()):
        return False
    # No event time exists: the authorization is the closest VTEX date to when it became ready.
    order_note_event(store=store, order_id=order.order_id, state=READY,
                     happened_at=order.last_change or order.authorized_date or order.creation_date)
    why = ("neither the feed nor the hook delivered its ready-for-handling event" if sync is None
           else "the hub knew it but had no work scheduled for it")
    SyncAttempt.objects.create(
        order=OrderSync.objects.get(store=store, order_id=order.order_id), step=SyncAttempt.Step.EVENT,
        outcome=SyncAttempt.Outcome.INFO, triggered_by=TRIGGERED_BY,
        message=f"found by reconciliation: VTEX lists it in ready-for-handling, and {why}",
    )
    log.info("store %s: order %s found by reconciliation", store.name, order.order_id)
    return True


def stores_named(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(enabled stores among `names`, names that are unknown or disabled), for the command's message."""
    names = list(names)
    enabled = set(Store.objects.filter(name__in=names, enabled=True).values_list("name", flat=True))
    return [name for name in names if name in enabled], [name for name in names if name not in enabled]
