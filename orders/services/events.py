"""What an incoming order event means for the order's sync state. Runs inside the event's transaction."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from core.models import Store
from core.vtex.client import FeedItem
from feeds.models import FeedEvent
from orders.models import ErpRequest, OrderSync, SyncAttempt

READY = "ready-for-handling"
INVOICED = "invoiced"
CANCEL_STATES = frozenset({"cancel", "canceled"})
ACTIONABLE_STATES = CANCEL_STATES | {READY, INVOICED}  # every other state is recorded and needs no action

log = logging.getLogger("hub.events")


def orders_note_events(*, store: Store, items: list[FeedItem]) -> list[tuple[str, str]]:
    """The outcome and error of each event (first sightings, from the feed or the hook), in order: the work it asks
    for is recorded on its order. Registered with feeds (orders.apps), which calls it for every lot it stores.

    Runs of ready-for-handling events (the bulk of a feed) are noted together, a few queries for the run; other
    actionable events one by one, in their place, so the result is the same as noting each in turn. A failure is
    kept on the event, not raised: a bug in one order's note must not lose the rest of the lot.
    """
    results: list[tuple[str, str] | None] = [
        None if item.state in ACTIONABLE_STATES else (FeedEvent.Outcome.IGNORED, "") for item in items]
    run: list[int] = []  # positions of consecutive ready-for-handling events (non-actionable ones do not break it)
    for position, item in enumerate(items):
        if results[position] is not None:
            continue
        if item.state == READY:
            run.append(position)
            continue
        if run:
            _note_ready_run(store, items, run, results)
            run = []
        results[position] = _note_one(store, item)
    if run:
        _note_ready_run(store, items, run, results)
    return results  # type: ignore[return-value]  # every position is set above


def _note_one(store: Store, item: FeedItem) -> tuple[str, str]:
    try:
        with transaction.atomic():  # savepoint
            return order_note_event(store=store, order_id=item.order_id, state=item.state,
                                    happened_at=item.current_change), ""
    except Exception as exc:
        log.exception("event %s for order %s could not be processed", item.event_id, item.order_id)
        return FeedEvent.Outcome.FAILED, f"{type(exc).__name__}: {exc}"[:2000]


def _note_ready_run(store: Store, items: list[FeedItem], run: list[int],
                    results: list[tuple[str, str] | None]) -> None:
    """order_note_event for a run of ready-for-handling items at once; one by one if that fails."""
    try:
        with transaction.atomic():  # savepoint: on failure nothing of the run is kept, and each is tried alone
            outcomes = orders_note_ready(store=store, items=[items[position] for position in run])
    except Exception:
        log.exception("a lot of %d ready-for-handling items could not be noted at once: one by one", len(run))
        outcomes = None
    for n, position in enumerate(run):
        results[position] = (outcomes[n], "") if outcomes else _note_one(store, items[position])


def orders_note_ready(*, store: Store, items: list[FeedItem]) -> list[str]:
    """What order_note_event does for each ready-for-handling event, for many at once: one locking read, then at
    most one insert, one update and one insert of timeline rows."""
    now = timezone.now()
    ids = sorted({item.order_id for item in items})  # locked in one order, whoever else locks several
    known = {sync.order_id: sync for sync in OrderSync.objects.select_for_update().filter(store=store, order_id__in=ids)
             .order_by("order_id").only("pk", "order_id", "state", "next_attempt_at")}
    created: dict[str, OrderSync] = {}
    wake: list[int] = []
    notes: list[SyncAttempt] = []
    outcomes: list[str] = []
    for item in items:
        sync = known.get(item.order_id)
        if sync is None:
            if item.order_id not in created:
                created[item.order_id] = OrderSync(store=store, order_id=item.order_id, next_attempt_at=now,
                                                    first_event_at=item.current_change or now)
            outcomes.append(FeedEvent.Outcome.QUEUED)  # a second event of a new order: already queued
        elif sync.state in (OrderSync.State.NEW, OrderSync.State.SENT_TO_ERP):
            if sync.next_attempt_at is None and sync.pk not in wake:
                wake.append(sync.pk)
            outcomes.append(FeedEvent.Outcome.QUEUED)
        else:
            notes.append(SyncAttempt(
                order=sync, step=SyncAttempt.Step.GET_ORDER, outcome=SyncAttempt.Outcome.INFO, triggered_by="event",
                message=f"ready-for-handling event ignored: the order is already {sync.get_state_display().lower()}"))
            outcomes.append(FeedEvent.Outcome.IGNORED)
    if created:
        # ON CONFLICT DO NOTHING: if another process created one this instant, its work is queued too.
        OrderSync.objects.bulk_create(list(created.values()), ignore_conflicts=True)
    if wake:
        OrderSync.objects.filter(pk__in=wake).update(next_attempt_at=now)
    if notes:
        SyncAttempt.objects.bulk_create(notes)
    return outcomes


def order_note_event(*, store: Store, order_id: str, state: str, happened_at: datetime | None) -> str:
    """Record the work an event asks for and return the event's outcome (queued or ignored).

    The dispatcher always re-reads the order from VTEX before acting, so events arriving out of
    order (a cancel before its ready-for-handling) cannot make it act on a stale status.
    """
    now = timezone.now()
    if state == READY:
        sync = (OrderSync.objects.select_for_update().filter(store=store, order_id=order_id)
                .only("pk", "state", "next_attempt_at").first())
        if sync is None:
            # ON CONFLICT DO NOTHING: if another process created it this instant, its work is queued too.
            OrderSync.objects.bulk_create(
                [OrderSync(store=store, order_id=order_id, next_attempt_at=now, first_event_at=happened_at or now)],
                ignore_conflicts=True,
            )
            return FeedEvent.Outcome.QUEUED
        if sync.state in (OrderSync.State.NEW, OrderSync.State.SENT_TO_ERP):
            if sync.next_attempt_at is None:
                OrderSync.objects.filter(pk=sync.pk).update(next_attempt_at=now)
            return FeedEvent.Outcome.QUEUED
        SyncAttempt.objects.create(
            order=sync, step=SyncAttempt.Step.GET_ORDER, outcome=SyncAttempt.Outcome.INFO, triggered_by="event",
            message=f"ready-for-handling event ignored: the order is already {sync.get_state_display().lower()}",
        )
        return FeedEvent.Outcome.IGNORED
    if state == INVOICED or state == "canceled":
        _confirm_erp_requests(store=store, order_id=order_id, state=state, now=now)
    if state in CANCEL_STATES:
        sync = (OrderSync.objects.select_for_update().filter(store=store, order_id=order_id)
                .only("pk", "state", "erp_cancel_sent_at", "erp_accepted_at").first())
        if sync is not None and ErpRequest.objects.filter(order=sync, kind=ErpRequest.Kind.CANCEL).exclude(
                state__in=[ErpRequest.State.REFUSED, ErpRequest.State.FAILED]).exists():
            return FeedEvent.Outcome.IGNORED  # the ERP asked for this cancel: it needs no notice of it
        if sync is None or sync.erp_cancel_sent_at or (sync.state == OrderSync.State.CANCELED and not sync.erp_has_order):
            return FeedEvent.Outcome.IGNORED  # the ERP never had it, or already knows
        # Only flag it: the worker that may hold the order right now sees the flag when it saves.
        OrderSync.objects.filter(pk=sync.pk).update(cancel_pending=True, next_attempt_at=now)
        return FeedEvent.Outcome.QUEUED
    return FeedEvent.Outcome.IGNORED


def _confirm_erp_requests(*, store: Store, order_id: str, state: str, now: datetime) -> None:
    """The feed closes the return path: `invoiced` confirms the invoices VTEX accepted, `canceled` a cancel the
    ERP asked for. An order VTEX says is invoiced while an invoice waits unconfirmed shows on the dashboard."""
    kind = ErpRequest.Kind.INVOICE if state == INVOICED else ErpRequest.Kind.CANCEL
    # Locked: the worker marking a request sent locks it too (vtex_requests._close), so one sees the other.
    sync = OrderSync.objects.select_for_update().filter(store=store, order_id=order_id).only("pk").first()
    if sync is None:
        return
    confirmed = ErpRequest.objects.filter(order=sync, kind=kind, state=ErpRequest.State.SENT).update(
        state=ErpRequest.State.CONFIRMED, confirmed_at=now, updated_at=now)
    OrderSync.objects.filter(pk=sync.pk).update(vtex_status=state)
    if confirmed:
        SyncAttempt.objects.create(
            order=sync, step=SyncAttempt.Step.VTEX_INVOICE if kind == ErpRequest.Kind.INVOICE
            else SyncAttempt.Step.VTEX_CANCEL, outcome=SyncAttempt.Outcome.OK, triggered_by="event",
            message=f"VTEX says {state}: {confirmed} request(s) of the ERP confirmed")
