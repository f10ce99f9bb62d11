"""The return path: what the ERP decided (invoices, tracking, cancellations) carried to VTEX by the order's worker.

The ERP's API (orders/erp_api.py) stores each request as an ErpRequest and flags the order (vtex_pending); the
dispatcher then claims the order like any other work, and this step sends its pending requests oldest first,
with the same claims, retries, 429 pauses, request budget and timeline as the rest of the order's steps.

Crash safety: a request is marked sent in the same transaction as its timeline row, after VTEX's answer. A crash
in between sends it again: VTEX answers a repeated invoice number, tracking update or cancel with a new receipt
and changes nothing (ORDERS-API.md §4; the sandbox does the same), so the repeat is harmless.
Lost wake-ups: the flag is cleared before the pending requests are read, and the API sets it (in the order
row's lock) after storing one, so a request stored while the worker holds the order is never stranded.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.vtex.client import Receipt, VtexError, VtexUnavailable
from orders.models import ErpRequest, OrderSync, SyncAttempt
from orders.services.backoff import retry_delay

if TYPE_CHECKING:
    from orders.services.process import OrderRun

STEP_OF = {ErpRequest.Kind.INVOICE: SyncAttempt.Step.VTEX_INVOICE,
           ErpRequest.Kind.TRACKING: SyncAttempt.Step.VTEX_TRACKING,
           ErpRequest.Kind.CANCEL: SyncAttempt.Step.VTEX_CANCEL}
# Invoices and tracking go to VTEX once handling started (VTEX refuses an invoice before); staff's "resolved"
# counts as handled. A cancel goes whatever the state: the ERP has the order.
INVOICE_STATES = frozenset({OrderSync.State.HANDLING_STARTED, OrderSync.State.RESOLVED})
NOW, LATER, NEVER = "now", "later", "never"
# The VTEX status whose feed event confirms a sent request (orders/services/events.py).
CONFIRMING_STATUS = {ErpRequest.Kind.INVOICE: "invoiced", ErpRequest.Kind.CANCEL: "canceled"}


def request_timing(request: ErpRequest, sync: OrderSync) -> str:
    """Whether a pending request can go to VTEX now, later (after start-handling), or never (the order is gone)."""
    if request.kind == ErpRequest.Kind.CANCEL:
        return NEVER if sync.state == OrderSync.State.CANCELED else NOW
    if sync.state in INVOICE_STATES:
        return NOW
    return NEVER if sync.state == OrderSync.State.CANCELED else LATER


def pending_requests(run: OrderRun) -> list[ErpRequest]:
    """The order's pending requests, read once per pass of the run (only when the order is flagged)."""
    if run.vtex_requests is None:
        run.vtex_requests = list(ErpRequest.objects.filter(order_id=run.sync_id, state=ErpRequest.State.PENDING)
                                 .order_by("created_at", "id"))
    return run.vtex_requests


def vtex_requests_due(run: OrderRun) -> bool:
    return run.sync.vtex_pending and any(request_timing(r, run.sync) != LATER for r in pending_requests(run))


def vtex_requests_send(run: OrderRun) -> bool:
    """Send what can go now; True when another step may follow (a cancel changes the order's state)."""
    # Cleared before the read below: a request stored from now on sets the flag again (see the docstring).
    OrderSync.objects.filter(pk=run.sync_id, claim_token=run.token).update(vtex_pending=False)
    run.sync.vtex_pending, run.vtex_requests = False, None
    later = False
    for request in pending_requests(run):
        timing = request_timing(request, run.sync)
        if timing == LATER:
            later = True
        elif timing == NEVER and request.kind == ErpRequest.Kind.CANCEL:
            _close(run, request, request_state=ErpRequest.State.CONFIRMED, outcome=SyncAttempt.Outcome.OK,
                   message="not sent: VTEX already says the order is canceled")
        elif timing == NEVER:
            _close(run, request, request_state=ErpRequest.State.REFUSED, outcome=SyncAttempt.Outcome.FAILED,
                   message=f"not sent: the order was canceled on VTEX before this {request.get_kind_display().lower()}")
        elif not _send(run, request):
            return False  # VTEX unavailable: the order comes back later for the rest (already saved)
    run.vtex_requests = None
    # Invoices waiting for start-handling: keep the order and go on to that step.
    run.save(release=not later, **({"vtex_pending": True} if later else {}))  # never False: see the docstring
    return later


def _send(run: OrderRun, request: ErpRequest) -> bool:
    """One request to VTEX. False when VTEX could not take it now (the order is saved and released)."""
    run.step = STEP_OF[request.kind]
    vtex, order_id = run.clients.vtex, run.sync.order_id
    try:
        if request.kind == ErpRequest.Kind.INVOICE:
            receipt = vtex.order_invoice(order_id, request.payload)
        elif request.kind == ErpRequest.Kind.TRACKING:
            receipt = vtex.invoice_tracking_update(order_id, request.invoice_number, request.payload)
        else:
            receipt = vtex.order_cancel(order_id, request.reason)
    except VtexUnavailable as exc:
        run.vtex_unavailable(exc, step=STEP_OF[request.kind], vtex_pending=True,
                             retry=lambda exc: _request_retry(run, request, exc))
        return False
    except VtexError as exc:  # VTEX's final word: the ERP is told through the request's state
        _close(run, request, request_state=ErpRequest.State.REFUSED, outcome=SyncAttempt.Outcome.FAILED, call=exc.call,
               message=f"VTEX refused the {request.get_kind_display().lower()}: {exc}", answer=exc.call)
        return True
    _accepted(run, request, receipt)
    return True


def _accepted(run: OrderRun, request: ErpRequest, receipt: Receipt) -> None:
    what = request.get_kind_display().lower()
    label = f" {request.invoice_number}" if request.invoice_number else ""
    fields = {}
    if request.kind == ErpRequest.Kind.CANCEL:
        # The ERP asked for it, so it needs no cancel notice; the feed's canceled event confirms it.
        fields = {"state": OrderSync.State.CANCELED, "cancel_pending": False,
                  "erp_cancel_sent_at": run.sync.erp_cancel_sent_at or timezone.now()}
    _close(run, request, request_state=ErpRequest.State.SENT, outcome=SyncAttempt.Outcome.OK, call=receipt.call,
           message=f"{what}{label} accepted by VTEX (receipt {receipt.receipt})", receipt=receipt.receipt, **fields)


def _close(run: OrderRun, request: ErpRequest, *, request_state: str, outcome: str, message: str, call=None,
           receipt: str = "", answer=None, **fields) -> None:
    """The request's new state and the order's timeline row, in one transaction."""
    now = timezone.now()
    values = {"state": request_state, "updated_at": now, "last_error": "" if outcome == SyncAttempt.Outcome.OK else message}
    if request_state == ErpRequest.State.SENT:
        values.update(sent_at=now, receipt=receipt)
    if request_state == ErpRequest.State.CONFIRMED:
        values["confirmed_at"] = now
    if answer is not None:
        values["vtex_answer"] = answer.excerpt
    with transaction.atomic():
        # VTEX may have moved the order (and the feed told us) before its answer to us was saved: confirmed then.
        # The order row's lock orders this against the event's transaction (events.py locks it too): one of the
        # two sees the other's write, so a request is never left sent after its confirming event.
        closing = CONFIRMING_STATUS.get(request.kind)
        status = OrderSync.objects.select_for_update().filter(pk=run.sync_id).values_list("vtex_status", flat=True)
        if request_state == ErpRequest.State.SENT and closing and status.first() == closing:
            values.update(state=ErpRequest.State.CONFIRMED, confirmed_at=now)
            message += f"; VTEX already says {closing}"
        ErpRequest.objects.filter(pk=request.pk, state=ErpRequest.State.PENDING).update(**values)
        run.save(step=STEP_OF[request.kind], outcome=outcome, message=message, call=call, **fields)


def _request_retry(run: OrderRun, request: ErpRequest, exc: VtexUnavailable) -> None:
    """A counted retry of the request (not of the order): gave up after HUB_MAX_ATTEMPTS, else backoff."""
    step, now = STEP_OF[request.kind], timezone.now()
    attempts = request.attempts + 1
    if attempts >= settings.HUB_MAX_ATTEMPTS:
        ErpRequest.objects.filter(pk=request.pk).update(attempts=attempts)
        _close(run, request, request_state=ErpRequest.State.FAILED, outcome=SyncAttempt.Outcome.FAILED, call=exc.call,
               message=f"gave up after {attempts} attempts: {exc}")
        run.save(release=True, **({"vtex_pending": True} if _still_pending(run) else {}))
        return
    delay = retry_delay(attempts, retry_after=exc.retry_after, rate_limited=exc.rate_limited)
    with transaction.atomic():
        ErpRequest.objects.filter(pk=request.pk).update(attempts=attempts, last_error=str(exc)[:2000], updated_at=now)
        run.save(step=step, outcome=SyncAttempt.Outcome.RETRY, call=exc.call, release=True, vtex_pending=True,
                 retry_at=now + timedelta(seconds=delay), message=f"{exc}; retry in {delay:.0f}s")


def _still_pending(run: OrderRun) -> bool:
    return ErpRequest.objects.filter(order_id=run.sync_id, state=ErpRequest.State.PENDING).exists()


def return_path_summary(sync: OrderSync) -> str:
    """Where the order stands on the return path, for the order page: "" when the ERP sent nothing yet."""
    requests = list(sync.erp_requests.exclude(state=ErpRequest.State.REFUSED).only("kind", "state", "invoice_type",
                                                                                   "invoice_value"))
    if not requests:
        return ""
    cancel = next((r for r in requests if r.kind == ErpRequest.Kind.CANCEL), None)
    if cancel is not None:
        return {ErpRequest.State.PENDING: "cancel requested", ErpRequest.State.SENT: "cancel sent to VTEX",
                ErpRequest.State.CONFIRMED: "canceled", ErpRequest.State.FAILED: "cancel failed"}[cancel.state]
    done = (ErpRequest.State.SENT, ErpRequest.State.CONFIRMED)
    invoiced = sum(r.invoice_value or 0 for r in requests
                   if r.kind == ErpRequest.Kind.INVOICE and r.invoice_type == "Output" and r.state in done)
    total = (sync.order_snapshot or {}).get("value") if isinstance(sync.order_snapshot, dict) else None
    waiting = any(r.state == ErpRequest.State.PENDING for r in requests)
    if sync.vtex_status == "invoiced":
        text = "invoiced"
    elif isinstance(total, int) and 0 < invoiced < total:
        text = "partially invoiced"
    elif invoiced:
        text = "invoice sent, waiting for VTEX's invoiced status"
    else:
        text = "invoice waiting to be sent"
    amounts = f" ({invoiced} of {total} ¢)" if isinstance(total, int) else ""
    tracking = any(r.kind == ErpRequest.Kind.TRACKING and r.state in done for r in requests)
    return text + amounts + ("; tracking sent" if tracking else "") + ("; more waiting to be sent" if waiting and
                                                                     invoiced else "")
