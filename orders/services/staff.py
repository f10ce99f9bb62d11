"""What staff can do to an order from the admin, with the same guards as the automatic path.

Each action is checked first (`action_check` says why an order would be skipped), then recorded on
the order's timeline (who, when, what), then the slow part (VTEX, ERP) is queued to the job cluster:
no page waits on VTEX.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from orders.models import ErpRequest, OrderSync, SyncAttempt
from orders.services.erp_requests import ErpRequestRefused, erp_request_record
from orders.services.process import claims_forget, order_claim

State = OrderSync.State


@dataclass(frozen=True)
class Action:
    name: str
    label: str
    verb: str  # for messages: "queued for retry"


ACTIONS = {
    "retry": Action("retry", "Retry now", "queued for retry"),
    "start_handling": Action("start_handling", "Start handling", "queued for start-handling"),
    "resend": Action("resend", "Resend to ERP", "queued to be resent to the ERP"),
    "resolve": Action("resolve", "Mark resolved", "marked resolved"),
    # The return path (orders/services/vtex_requests.py): requests VTEX refused or that failed, sent again;
    # and a cancellation on VTEX decided by staff, carried like the ERP's own (a reason and a confirmation page).
    "resend_vtex": Action("resend_vtex", "Resend invoice to VTEX", "queued to be sent to VTEX again"),
    "cancel_vtex": Action("cancel_vtex", "Cancel on VTEX", "queued to be canceled on VTEX"),
}
NEEDS_REASON = frozenset({"resolve", "cancel_vtex"})
CONFIRMED_ACTIONS = frozenset({"cancel_vtex"})  # from the order page too, behind a confirmation page
RESENDABLE = (ErpRequest.State.REFUSED, ErpRequest.State.FAILED)


class ActionRefused(Exception):
    """The action does not apply to this order now; the message says why."""


def action_check(action: str, sync: OrderSync) -> str | None:
    """None if the action applies to the order, else the reason it would be skipped."""
    if action not in ACTIONS:
        return f"unknown action {action!r}"
    if sync.claimed_until and sync.claimed_until > timezone.now():
        return "a worker is on this order right now; try again in a few seconds"
    if action == "retry":
        if sync.state in (State.NEW, State.SENT_TO_ERP, State.NEEDS_ATTENTION):
            return None
        if sync.cancel_pending and not sync.erp_cancel_sent_at:
            return None
        return f"nothing to retry: the order is {sync.get_state_display().lower()}"
    if action == "start_handling":
        if not sync.erp_has_order:
            return "the ERP has not accepted this order yet"
        if sync.state not in (State.SENT_TO_ERP, State.NEEDS_ATTENTION):
            return f"the order is {sync.get_state_display().lower()}"
        if sync.cancel_pending:
            return "a cancellation is pending for this order"
        return None
    if action == "resend":
        if sync.state == State.RESOLVED:
            return "the order was marked resolved"
        if sync.state == State.CANCELED and not sync.erp_has_order:
            return "canceled before it reached the ERP: there is nothing to resend"
        return None
    if action == "resend_vtex":
        if not sync.erp_requests.filter(state__in=RESENDABLE).exists():
            return "no invoice, tracking or cancel that VTEX refused or that failed"
        return None
    if action == "cancel_vtex":
        if sync.state == State.CANCELED:
            return "the order is already canceled"
        if sync.erp_requests.filter(kind=ErpRequest.Kind.CANCEL).exclude(state__in=RESENDABLE).exists():
            return "a cancellation on VTEX was already requested"
        return None  # an invoiced order: erp_request_record refuses it, saying why
    # resolve
    if sync.state in (State.HANDLING_STARTED, State.CANCELED, State.RESOLVED):
        return f"nothing to resolve: the order is {sync.get_state_display().lower()}"
    return None


def order_act(*, sync_id: int, action: str, by: str, reason: str = "") -> str:
    """Apply one staff action to one order; returns a sentence for the user, raises ActionRefused."""
    sync = OrderSync.objects.defer("order_snapshot").get(pk=sync_id)
    if problem := action_check(action, sync):
        raise ActionRefused(f"{sync.order_id}: {problem}")
    if action in NEEDS_REASON and not reason.strip():
        raise ActionRefused(f"{sync.order_id}: a reason is required to {ACTIONS[action].label.lower()}")
    if action == "cancel_vtex":
        return _cancel_on_vtex(sync, by=by, reason=reason.strip())
    claim = order_claim(sync_id=sync_id, due_only=False)  # keeps workers off the order while we write
    if claim is None:
        raise ActionRefused(f"{sync.order_id}: a worker is on this order right now; try again in a few seconds")
    try:
        return _staff_write(action, sync, token=claim.token, by=by, reason=reason)
    finally:
        claims_forget([claim.token])  # released by the write (or lapsing, if it failed): no more renewals


def _staff_write(action: str, sync: OrderSync, *, token: str, by: str, reason: str) -> str:
    sync_id = sync.pk
    now = timezone.now()
    fields: dict = {"claim_token": "", "claimed_until": None, "claimed_by": "", "updated_at": now}
    message = f"{ACTIONS[action].label} requested by {by}"
    task: tuple | None = None
    if action == "retry":
        if sync.state == State.NEEDS_ATTENTION:
            # Back to the step it failed at; a pending cancel notice goes first either way.
            fields["state"] = State.SENT_TO_ERP if sync.erp_has_order else State.NEW
        fields.update(attempts=0, next_attempt_at=now, last_error="", error_kind="")
        task = ("orders.tasks.process_order", sync_id, by)
    elif action == "start_handling":
        fields.update(state=State.SENT_TO_ERP, attempts=0, next_attempt_at=now, last_error="", error_kind="")
        task = ("orders.tasks.process_order", sync_id, by)
    elif action == "resend":
        task = ("orders.tasks.resend_order", sync_id, by)
    elif action == "resend_vtex":
        fields.update(vtex_pending=True, next_attempt_at=now)
        task = ("orders.tasks.process_order", sync_id, by)
    else:
        fields.update(state=State.RESOLVED, next_attempt_at=None)
        message += f": {reason.strip()}"
    with transaction.atomic():
        if action == "resend_vtex":
            again = sync.erp_requests.filter(state__in=RESENDABLE).update(
                state=ErpRequest.State.PENDING, attempts=0, last_error="", updated_at=now)
            message += f": {again} request(s) sent again"
        OrderSync.objects.filter(pk=sync_id, claim_token=token).update(**fields)
        SyncAttempt.objects.create(order_id=sync_id, step=SyncAttempt.Step.STAFF, outcome=SyncAttempt.Outcome.INFO,
                                   message=message[:2000], triggered_by=by)
        if task:
            transaction.on_commit(lambda: async_task(*task, task_name=f"{action} {sync.order_id}"[:100]))
    return f"{sync.order_id}: {ACTIONS[action].verb}"


def _cancel_on_vtex(sync: OrderSync, *, by: str, reason: str) -> str:
    """Record a cancellation by staff as the ERP's would be (the same checks: an invoiced order is refused)."""
    try:
        erp_request_record(store=sync.store, order_id=sync.order_id, kind=ErpRequest.Kind.CANCEL,
                           body={"reason": reason}, idempotency_key=f"staff:{uuid.uuid4().hex}", requested_by=by)
    except ErpRequestRefused as exc:
        raise ActionRefused(f"{sync.order_id}: {exc.reason}") from exc
    SyncAttempt.objects.create(order=sync, step=SyncAttempt.Step.STAFF, outcome=SyncAttempt.Outcome.INFO,
                               message=f"Cancel on VTEX requested by {by}: {reason}"[:2000], triggered_by=by)
    async_task("orders.tasks.process_order", sync.pk, by, task_name=f"cancel_vtex {sync.order_id}"[:100])
    return f"{sync.order_id}: {ACTIONS['cancel_vtex'].verb}"
