"""What an incoming order event means for the order's sync state. Runs inside the event's transaction."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from feeds.models import FeedEvent, Store
from orders.models import OrderSync, SyncAttempt

READY = "ready-for-handling"
CANCEL_STATES = frozenset({"cancel", "canceled"})
ACTIONABLE_STATES = CANCEL_STATES | {READY}  # every other state is recorded and needs no action


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
    if state in CANCEL_STATES:
        sync = (OrderSync.objects.select_for_update().filter(store=store, order_id=order_id)
                .only("pk", "state", "erp_cancel_sent_at", "erp_accepted_at").first())
        if sync is None or sync.erp_cancel_sent_at or (sync.state == OrderSync.State.CANCELED and not sync.erp_has_order):
            return FeedEvent.Outcome.IGNORED  # the ERP never had it, or already knows
        # Only flag it: the worker that may hold the order right now sees the flag when it saves.
        OrderSync.objects.filter(pk=sync.pk).update(cancel_pending=True, next_attempt_at=now)
        return FeedEvent.Outcome.QUEUED
    return FeedEvent.Outcome.IGNORED
