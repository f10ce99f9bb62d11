"""What an incoming order event means for the order's sync state. Runs inside the event's transaction."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from core.models import Store
from feeds.models import FeedEvent
from orders.models import ErpRequest, OrderSync, SyncAttempt

READY = "ready-for-handling"
INVOICED = "invoiced"
CANCEL_STATES = frozenset({"cancel", "canceled"})
ACTIONABLE_STATES = CANCEL_STATES | {READY, INVOICED}  # every other state is recorded and needs no action


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
