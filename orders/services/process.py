"""One order, held by one worker: get order -> ERP -> start-handling, and cancel notices.

Crash safety, step by step:
- The ERP is called with an Idempotency-Key fixed per (store, order, event): a crash after the
  ERP accepted but before we saved it only causes a replay the ERP recognises.
- start-handling is called only once `erp_accepted_at` is saved. A crash after VTEX's 204 but before
  we saved it leads to one more call, answered 409 OMS003, which re-reads the order and finds it handled.
- Every write checks the claim token, so a worker whose claim expired cannot overwrite the next one.
- No database transaction is open during an HTTP call.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import reduce
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, CharField, DateTimeField, Q, QuerySet, Value, When
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from core.heartbeat import Holds, heartbeat_chore, hold_seconds
from core.leases import holder_is_gone, lease_holder_id
from core.models import ErpConnection, Store
from core.rate_limit import REFUSED_CODE
from core.vtex.client import Call, OrderDocument, VtexClient, VtexError, VtexUnavailable
from core.vtex_account import store_pause, vtex_client
from integrationhub.personal_data import mask_text
from orders import erp
from orders.models import OrderSync, SyncAttempt
from orders.services.backoff import retry_delay
from orders.services.erp_breaker import breaker_failure, breaker_gate, breaker_success
from orders.services.vtex_requests import vtex_requests_due, vtex_requests_send

log = logging.getLogger("hub.orders")
Kind = OrderSync.ErrorKind

READY = "ready-for-handling"
CANCELED_STATUSES = frozenset({"cancel", "canceled"})
# Statuses past start-handling: if VTEX reports one of these, handling has started.
HANDLED_STATUSES = frozenset({"start-handling", "handling", "ready-for-invoicing", "invoice", "invoiced"})
WORKING_STATES = (OrderSync.State.NEW, OrderSync.State.SENT_TO_ERP)
# What a run reads (not the large order document); the store and ERP rows come along for the clients.
LOADED_FIELDS = ("store", "order_id", "state", "cancel_pending", "vtex_pending", "attempts", "erp_accepted_at",
                 "erp_reference", "erp_cancel_sent_at")
LIMITER_RETRY_SECONDS = 1.0  # after the account's request budget had no slot in time
# Store and ERP rows are read once per thread for this long, not once per order: edits apply within seconds.
STORE_CACHE_SECONDS = 5.0


class ClaimLost(Exception):
    """Our claim expired and another worker took the order: stop without writing."""


class Clients:
    """A thread's clients for one store. The ERP connector is built on first use, inside the step's error
    handling: a connector whose constructor raises becomes a retry on the timeline, not a stuck claim."""

    def __init__(self, *, vtex: VtexClient, connection: ErpConnection) -> None:
        self.vtex, self.connection = vtex, connection
        self._erp: erp.ErpConnector | None = None

    @property
    def erp(self) -> erp.ErpConnector:
        if self._erp is None:
            self._erp = erp.connector_for(self.connection)
        return self._erp


_local = threading.local()


def store_for(store_id: int) -> Store:
    cache: dict[int, tuple[float, Store]] = _local.__dict__.setdefault("stores", {})
    hit = cache.get(store_id)
    if hit and time.monotonic() - hit[0] < STORE_CACHE_SECONDS:
        return hit[1]
    store = Store.objects.select_related("erp").get(pk=store_id)
    cache[store_id] = (time.monotonic(), store)
    return store


def clients_for(store: Store) -> Clients:
    """Per-thread clients (requests sessions are not thread-safe); rebuilt when the store changes."""
    cache: dict[int, tuple[Any, Clients]] = _local.__dict__.setdefault("clients", {})
    version = (store.updated_at, store.erp.pk, store.erp.url, store.erp.connector, store.erp.timeout_seconds,
               tuple(sorted((store.erp.headers or {}).items())))
    cached = cache.get(store.pk)
    if cached and cached[0] == version:
        return cached[1]
    vtex = vtex_client(store)
    cache[store.pk] = (version, Clients(vtex=vtex, connection=store.erp))
    return cache[store.pk][1]


def _claims_renew(tokens: list[str], seconds: float) -> None:
    """The heartbeat's renewal of the claims this process's workers hold (never one taken over meanwhile)."""
    OrderSync.objects.filter(claimed_by=lease_holder_id(), claim_token__in=tokens).update(
        claimed_until=timezone.now() + timedelta(seconds=seconds))


_claims = Holds("order claims", _claims_renew)


def claim_free(now: datetime) -> Q:
    """Orders no worker holds: never claimed, released, or claimed past its time."""
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


@dataclass(frozen=True)
class Claim:
    """An order handed to this process alone: the fields its run reads, and the token every write checks."""

    sync: OrderSync
    token: str


def orders_claim(rows: QuerySet[OrderSync], *, limit: int) -> list[Claim]:
    """Claim up to `limit` of `rows` that nobody holds: one UPDATE for them all, one read of their fields.

    SKIP LOCKED: dispatchers claiming at the same instant take different orders instead of queueing on each other
    (SQLite has no row locks and serialises writers anyway). Each order gets its own token, a random prefix and its
    id. The claims last HUB_CLAIM_SECONDS and the heartbeat renews them until order_process (or claims_drop) lets go.
    """
    if limit <= 0:
        return []
    now = timezone.now()
    prefix, holder = secrets.token_hex(12) + "-", lease_holder_id()
    free = rows.filter(claim_free(now))  # in the order the caller gave (due_orders: oldest due first)
    with transaction.atomic():  # FOR UPDATE needs a transaction, even in a subquery
        picked = free.select_for_update(skip_locked=True, of=("self",)).values("pk")[:limit]
        claimed = OrderSync.objects.filter(pk__in=picked).update(
            claim_token=Concat(Value(prefix), Cast("pk", CharField())), claimed_by=holder,
            claimed_until=now + timedelta(seconds=hold_seconds()))
    if not claimed:
        return []
    # Read by holder (an indexed handful of rows) and prefix: exactly the rows this UPDATE took.
    syncs = list(OrderSync.objects.filter(claimed_by=holder, claim_token__startswith=prefix).only(*LOADED_FIELDS))
    claims = [Claim(sync=sync, token=prefix + str(sync.pk)) for sync in syncs]
    for claim in claims:
        _claims.add(claim.token)  # renewed from the next beat on, well within HUB_CLAIM_SECONDS
    return claims


def order_claim(*, sync_id: int, due_only: bool = True) -> Claim | None:
    """Hand one order to this worker alone (None if someone has it, or, with due_only, if it is not due)."""
    rows = OrderSync.objects.filter(pk=sync_id)
    if due_only:
        rows = rows.filter(next_attempt_at__lte=timezone.now())
    claims = orders_claim(rows, limit=1)
    return claims[0] if claims else None


def claims_drop(claims: list[Claim]) -> None:
    """Give back claims taken and not worked (a graceful stop), in one UPDATE, and stop renewing them."""
    tokens = [claim.token for claim in claims]
    if tokens:
        OrderSync.objects.filter(claim_token__in=tokens).update(claim_token="", claimed_until=None, claimed_by="")
    claims_forget(tokens)


def claims_forget(tokens: list[str]) -> None:
    """No more renewals: the claim was released by its last write (or, if that failed, lapses on its own)."""
    _claims.discard(tokens)


def claims_release_dead_local() -> int:
    """Free the claims of processes of this host that no longer exist (a SIGKILL, a crash, a hard stop).

    The same rule as the job leases (core.leases.holder_is_gone): only when certain the holder is gone.
    A claim of another host or of a live process waits for its expiry, as before.
    """
    released = 0
    for holder in OrderSync.objects.exclude(claimed_by="").values_list("claimed_by", flat=True).distinct():
        if holder_is_gone(holder):
            released += OrderSync.objects.filter(claimed_by=holder).update(claim_token="", claimed_until=None,
                                                                           claimed_by="")
    if released:
        log.warning("released %d order claim(s) of processes of this host that no longer exist", released)
    return released


heartbeat_chore("dead local claims", lambda: claims_release_dead_local())


def has_work(sync: OrderSync) -> bool:
    """Whether the dispatcher should come back to this order on its own (parked orders wait for staff): some
    step of STEPS may be due (the ERP's requests are looked at once the order is claimed)."""
    if sync.state == OrderSync.State.NEEDS_ATTENTION:
        return False
    if sync.state in WORKING_STATES or sync.vtex_pending:
        return True
    return sync.cancel_pending and not sync.erp_cancel_sent_at


class OrderRun:
    """The work on one claimed order. `by` is "schedule" or a staff username."""

    def __init__(self, *, claim: Claim, by: str, stopping: Callable[[], bool] | None = None) -> None:
        self.sync, self.token, self.by = claim.sync, claim.token, by  # the claim read the run's fields
        self.sync_id = claim.sync.pk
        self.stopping = stopping
        self.pending_fields: dict[str, Any] = {}
        self.pending_attempts: list[SyncAttempt] = []
        self.erp_request = ""  # what the last ERP call sent, minus the order document and secret headers
        self.step: str = SyncAttempt.Step.GET_ORDER  # the step under way: where an unexpected failure is recorded
        self.vtex_requests: list | None = None  # the ERP's pending requests, read once per pass (vtex_requests.py)

    def prepare(self) -> None:
        """Load the store and clients. Not in __init__: order_process records what fails here on the timeline."""
        self.sync.store = store_for(self.sync.store_id)
        self.clients = clients_for(self.sync.store)

    # --- writing -------------------------------------------------------------------------
    def note(self, *, step: str, outcome: str = SyncAttempt.Outcome.OK, message: str = "",
             call: Call | None = None, **fields: Any) -> None:
        """Keep a timeline row and fields for the next save(): one transaction instead of two."""
        self.pending_fields.update(fields)
        self.pending_attempts.append(self._attempt(step=step, outcome=outcome, message=message, call=call))

    def _attempt(self, *, step: str, outcome: str, message: str, call: Call | None) -> SyncAttempt:
        erp_step = step in (SyncAttempt.Step.ERP_SEND, SyncAttempt.Step.ERP_CANCEL)
        return SyncAttempt(
            order_id=self.sync_id, step=step, outcome=outcome, message=message[:2000], triggered_by=self.by,
            http_status=call.status if call else None, duration_ms=call.duration_ms if call else None,
            response_excerpt=call.excerpt if call else "",
            request_excerpt=self.erp_request if erp_step else "",
        )

    def save(self, *, step: str | None = None, outcome: str = SyncAttempt.Outcome.OK, message: str = "",
             call: Call | None = None, release: bool = False, retry_at: Any = None, **fields: Any) -> OrderSync:
        """Write fields and timeline rows in one transaction, if we still hold the claim."""
        fields = {**self.pending_fields, **fields}
        attempts = self.pending_attempts + (
            [self._attempt(step=step, outcome=outcome, message=message, call=call)] if step else [])
        now = timezone.now()
        values: dict[str, Any] = {**fields, "updated_at": now}
        if release:
            values.update(next_attempt_at=retry_at or self._next_attempt(fields, now), claim_token="",
                          claimed_until=None, claimed_by="")
        with transaction.atomic():
            # One conditional UPDATE: it both checks the claim and writes.
            if not OrderSync.objects.filter(pk=self.sync_id, claim_token=self.token).update(**values):
                raise ClaimLost(self.sync_id)
            SyncAttempt.objects.bulk_create(attempts)
        for name, value in values.items():
            if not hasattr(value, "resolve_expression"):
                setattr(self.sync, name, value)
        self.pending_fields, self.pending_attempts = {}, []
        return self.sync

    def _next_attempt(self, fields: dict[str, Any], now: Any) -> Any:
        """When the dispatcher should come back on its own; see has_work()."""
        after = OrderSync(**{name: fields.get(name, getattr(self.sync, name))
                             for name in ("state", "cancel_pending", "vtex_pending", "erp_cancel_sent_at")})
        if has_work(after):
            return now
        if after.state == OrderSync.State.NEEDS_ATTENTION:
            return None
        # A cancel event or a request of the ERP may have flagged the order while we worked: the database has the
        # last word (the row's own columns, read under its lock), unless we wrote that flag ourselves.
        flags = [Q(vtex_pending=True)]  # the run never writes it False: it clears it before reading the requests
        if not ("cancel_pending" in fields or after.erp_cancel_sent_at):
            flags.append(Q(cancel_pending=True))
        return Case(When(reduce(operator.or_, flags), then=Value(now)), default=Value(None),
                    output_field=DateTimeField())

    def retry(self, *, step: str, message: str, kind: Kind, call: Call | None = None,
              retry_after: float | None = None, rate_limited: bool = False) -> OrderSync:
        attempts = self.sync.attempts + 1
        if attempts >= settings.HUB_MAX_ATTEMPTS:
            return self.park(step=step, kind=kind, call=call,
                             message=f"gave up after {attempts} attempts: {message}", attempts=attempts)
        delay = retry_delay(attempts, retry_after=retry_after, rate_limited=rate_limited)
        return self.save(step=step, outcome=SyncAttempt.Outcome.RETRY, call=call, release=True,
                         message=f"{message}; retry in {delay:.0f}s",
                         retry_at=timezone.now() + timedelta(seconds=delay),
                         attempts=attempts, last_error=message, error_kind=kind)

    def wait(self, *, step: str, message: str, kind: Kind, until: datetime, call: Call | None = None,
             **fields: Any) -> OrderSync:
        """Come back at `until` without using up an attempt: what failed is shared (the account's request budget,
        an ERP whose circuit breaker is open), not this order, so no outage, however long, parks it."""
        return self.save(step=step, outcome=SyncAttempt.Outcome.RETRY, call=call, release=True, retry_at=until,
                         message=f"{message}; waiting until {until:%H:%M:%S} UTC", last_error=message,
                         error_kind=kind, **fields)

    def park(self, *, step: str, message: str, kind: Kind, call: Call | None = None, **fields: Any) -> OrderSync:
        """Needs attention: nothing more happens until staff act (or a cancel notice is owed)."""
        # The message may quote an ERP answer with the customer's data: logs get the masked text.
        log.warning("order %s needs attention: %s", self.sync.order_id, mask_text(message))
        fields.setdefault("attempts", self.sync.attempts + 1)
        return self.save(step=step, outcome=SyncAttempt.Outcome.FAILED, call=call, message=message, release=True,
                         state=OrderSync.State.NEEDS_ATTENTION, last_error=message, error_kind=kind, **fields)

    # --- the steps -----------------------------------------------------------------------
    def run(self) -> str:
        """Advance the order as far as it goes now; returns its sync state."""
        try:
            self.prepare()
            for _ in range(6):  # each pass moves one step; the bound only guards against a bug looping
                if not self.step_once():
                    break
                if self.stopping is not None and self.stopping():
                    # A graceful stop: the step in hand is saved; release the order, due now, for the next run.
                    self.save(release=True)
                    break
            else:
                self.save(release=True)
        except ClaimLost:
            log.warning("order %s: claim lost to another worker", self.sync.order_id)
        return self.sync.state

    def step_once(self) -> bool:
        """Do the next step (the first of STEPS that is due). True when there may be another one to do now."""
        self.vtex_requests = None  # read again each pass
        step = next((step for step in STEPS if step.due(self)), None)
        if step is None:
            self.save(release=True)
            return False
        self.step = step.name
        try:
            return step.do(self)
        except VtexUnavailable as exc:
            self.vtex_unavailable(exc, step=self._step_of(exc.call))
            return False
        except VtexError as exc:
            self.park(step=self._step_of(exc.call), message=str(exc), call=exc.call, kind=Kind.VTEX_REFUSED)
            return False

    def vtex_unavailable(self, exc: VtexUnavailable, *, step: str,
                         retry: Callable[[VtexUnavailable], object] | None = None, **fields: Any) -> None:
        """What a VtexUnavailable means, whichever step met it. No slot in the account's request budget: the order
        waits without using an attempt (the budget is shared, not this order's fault). A 429: the whole account
        pauses for Retry-After, then a counted retry. Anything else: a counted retry with backoff. `retry` counts
        the attempt elsewhere (on the ERP's request, for the return path) instead of on the order."""
        if exc.code == REFUSED_CODE:
            self.wait(step=step, message=str(exc), kind=Kind.VTEX_RATE_LIMITED,
                      until=timezone.now() + timedelta(seconds=exc.retry_after or LIMITER_RETRY_SECONDS), **fields)
            return
        if exc.rate_limited:
            store_pause(store_id=self.sync.store_id, retry_after=exc.retry_after)
        if retry is not None:
            retry(exc)
            return
        kind = Kind.VTEX_RATE_LIMITED if exc.rate_limited else Kind.VTEX_UNAVAILABLE
        self.retry(step=step, message=str(exc), call=exc.call, retry_after=exc.retry_after,
                   rate_limited=exc.rate_limited, kind=kind)

    @staticmethod
    def _step_of(call: Call | None) -> str:
        if call and call.path.endswith("/start-handling"):
            return SyncAttempt.Step.START_HANDLING
        return SyncAttempt.Step.GET_ORDER

    def get_order(self) -> OrderDocument:
        self.step = SyncAttempt.Step.GET_ORDER
        doc = self.clients.vtex.order_get(self.sync.order_id)
        profile = doc.raw.get("clientProfileData") or {}
        # The document holds personal data: it is kept in the snapshot (masked for most staff), not the timeline.
        call = replace(doc.call, excerpt="")
        self.note(step=SyncAttempt.Step.GET_ORDER, call=call, message=f"VTEX status: {doc.status}",
                  vtex_status=doc.status[:60], order_snapshot=doc.raw, sequence=str(doc.raw.get("sequence") or "")[:40],
                  customer_email=str(profile.get("email") or "")[:254] if isinstance(profile, dict) else "")
        return doc

    def send_to_erp(self, *, event: str, order: dict) -> erp.ErpResult:
        key = erp.idempotency_key(store_name=self.sync.store.name, order_id=self.sync.order_id, event=event)
        self.erp_request = json.dumps({
            "url": self.sync.store.erp.url, "Idempotency-Key": key,
            "headers": sorted(self.sync.store.erp.headers or {}),  # names only: values may be credentials
            "body": {"event": event, "store": self.sync.store.name, "orderId": self.sync.order_id,
                     "order": "<the VTEX order document>"},
        })
        self.step = SyncAttempt.Step.ERP_CANCEL if event == erp.ORDER_CANCELED else SyncAttempt.Step.ERP_SEND
        try:
            return self.clients.erp.send(event=event, store_name=self.sync.store.name, order_id=self.sync.order_id,
                                         order=order, idempotency_key=key)
        except Exception as exc:  # the connector's own failure (set-up or send): retried like an ERP outage
            log.exception("order %s: ERP connector failed", self.sync.order_id)
            return erp.ErpResult("retry", f"ERP connector {self.sync.store.erp.connector} failed: "
                                          f"{type(exc).__name__}: {str(exc)[:300]}")

    def erp_gate(self, step: str) -> bool:
        """False (and the order waits, keeping its attempts) while the ERP's breaker is open or probed by another."""
        if (until := breaker_gate(self.sync.store.erp)) is None:
            return True
        self.wait(step=step, kind=Kind.ERP_UNAVAILABLE, until=until,
                  message="the ERP's circuit breaker is open (or another order is probing it)")
        return False

    def step_send_to_erp(self) -> bool:
        if not self.erp_gate(SyncAttempt.Step.ERP_SEND):
            return False
        doc = self.get_order()
        if doc.status in CANCELED_STATUSES:
            self.save(step=SyncAttempt.Step.GET_ORDER, outcome=SyncAttempt.Outcome.INFO, release=True,
                      message="canceled before it reached the ERP: nothing sent",
                      state=OrderSync.State.CANCELED, cancel_pending=False, attempts=0, last_error="", error_kind="")
            return False
        if doc.status in HANDLED_STATUSES:
            self.park(step=SyncAttempt.Step.GET_ORDER, kind=Kind.HANDLED_ELSEWHERE,
                      message=f"VTEX already says '{doc.status}' but the hub never sent this order to the ERP: "
                              "resend it or mark it resolved")
            return False
        if doc.status != READY:
            self.retry(step=SyncAttempt.Step.GET_ORDER, kind=Kind.NOT_READY,
                       message=f"VTEX says '{doc.status}', not ready-for-handling yet")
            return False
        result = self.send_to_erp(event=erp.ORDER_READY, order=doc.raw)
        if not self._erp_result(result, step=SyncAttempt.Step.ERP_SEND):
            return False
        self.save(step=SyncAttempt.Step.ERP_SEND, call=_erp_call(result), message=result.message,
                  state=OrderSync.State.SENT_TO_ERP, erp_accepted_at=timezone.now(),
                  erp_reference=result.reference, attempts=0, last_error="", error_kind="")
        return True

    def _erp_result(self, result: erp.ErpResult, *, step: str) -> bool:
        """True when accepted; otherwise schedules a retry or parks the order."""
        connection = self.sync.store.erp
        if result.outcome == "accepted":
            breaker_success(connection)
            return True
        if result.outcome == "retry":
            if open_until := breaker_failure(connection):
                self.wait(step=step, call=_erp_call(result), kind=Kind.ERP_UNAVAILABLE, until=open_until,
                          message=f"{result.message}; the ERP failed {connection.breaker_failures} times in a row "
                                  "(circuit breaker open)")
                return False
            self.retry(step=step, message=result.message, call=_erp_call(result), kind=Kind.ERP_UNAVAILABLE,
                       retry_after=result.retry_after)
        else:
            self.park(step=step, message=f"{result.message}: {result.excerpt[:300]}", call=_erp_call(result),
                      kind=Kind.ERP_REFUSED)
        return False

    def step_start_handling(self) -> bool:
        self.step = SyncAttempt.Step.START_HANDLING
        try:
            call = self.clients.vtex.order_start_handling(self.sync.order_id)
        except VtexError as exc:
            if exc.status != 409 or isinstance(exc, VtexUnavailable):
                raise
            # OMS003: not in ready-for-handling. Ask VTEX where the order is now.
            self.save(step=SyncAttempt.Step.START_HANDLING, outcome=SyncAttempt.Outcome.INFO, call=exc.call,
                      message=f"{exc}; checking the order's status")
            return self.after_conflict()
        self.save(step=SyncAttempt.Step.START_HANDLING, call=call, message="handling started", release=True,
                  state=OrderSync.State.HANDLING_STARTED, handling_started_at=timezone.now(), vtex_status="handling",
                  attempts=0, last_error="", error_kind="")
        return False

    def after_conflict(self) -> bool:
        doc = self.get_order()
        if doc.status in HANDLED_STATUSES:
            self.save(step=SyncAttempt.Step.START_HANDLING, outcome=SyncAttempt.Outcome.OK, release=True,
                      message=f"VTEX already has the order in '{doc.status}'",
                      state=OrderSync.State.HANDLING_STARTED, handling_started_at=timezone.now(),
                      attempts=0, last_error="", error_kind="")
            return False
        if doc.status in CANCELED_STATUSES:
            self.save(cancel_pending=True)  # the ERP has it: the next pass sends the cancel notice
            return True
        if doc.status == READY:
            self.retry(step=SyncAttempt.Step.START_HANDLING, kind=Kind.VTEX_UNAVAILABLE,
                       message="VTEX answered 409 but still says ready-for-handling")
            return False
        self.park(step=SyncAttempt.Step.START_HANDLING, kind=Kind.UNEXPECTED_STATUS,
                  message=f"start-handling refused and VTEX says '{doc.status}'")
        return False

    def step_cancel(self) -> bool:
        if not self.erp_gate(SyncAttempt.Step.ERP_CANCEL):
            return False
        doc = self.get_order()
        if doc.status not in CANCELED_STATUSES:
            self.save(step=SyncAttempt.Step.ERP_CANCEL, outcome=SyncAttempt.Outcome.INFO, cancel_pending=False,
                      message=f"cancel event, but VTEX says '{doc.status}': no cancel notice")
            return True
        if not self.sync.erp_has_order:
            self.save(step=SyncAttempt.Step.GET_ORDER, outcome=SyncAttempt.Outcome.INFO, release=True,
                      message="canceled before it reached the ERP: nothing sent",
                      state=OrderSync.State.CANCELED, cancel_pending=False, attempts=0, last_error="", error_kind="")
            return False
        result = self.send_to_erp(event=erp.ORDER_CANCELED, order=doc.raw)
        if not self._erp_result(result, step=SyncAttempt.Step.ERP_CANCEL):
            return False
        self.save(step=SyncAttempt.Step.ERP_CANCEL, call=_erp_call(result), message=result.message, release=True,
                  state=OrderSync.State.CANCELED, cancel_pending=False, erp_cancel_sent_at=timezone.now(),
                  attempts=0, last_error="", error_kind="")
        return False


    def resend(self) -> str:
        """Staff's "resend to ERP": the same event and Idempotency-Key as before, so the ERP can drop it."""
        self.prepare()
        try:
            doc = self.get_order()
        except VtexError as exc:
            self.save(step=SyncAttempt.Step.GET_ORDER, outcome=SyncAttempt.Outcome.FAILED, call=exc.call,
                      message=f"resend not possible: {exc}", release=True)
            return self.sync.state
        canceled = doc.status in CANCELED_STATUSES
        if canceled and not self.sync.erp_has_order:
            self.save(step=SyncAttempt.Step.ERP_SEND, outcome=SyncAttempt.Outcome.INFO, release=True,
                      message="not resent: VTEX says the order is canceled and the ERP never had it",
                      state=OrderSync.State.CANCELED, cancel_pending=False)
            return self.sync.state
        event = erp.ORDER_CANCELED if canceled else erp.ORDER_READY
        step = SyncAttempt.Step.ERP_CANCEL if canceled else SyncAttempt.Step.ERP_SEND
        result = self.send_to_erp(event=event, order=doc.raw)
        if result.outcome != "accepted":
            outcome = SyncAttempt.Outcome.FAILED
            self.save(step=step, outcome=outcome, call=_erp_call(result), release=True,
                      message=f"resend failed: {result.message} {result.excerpt[:300]}".strip())
            return self.sync.state
        fields: dict[str, Any] = {"erp_reference": result.reference or self.sync.erp_reference}
        if canceled:
            fields.update(state=OrderSync.State.CANCELED, cancel_pending=False, erp_cancel_sent_at=timezone.now())
        else:
            fields["erp_accepted_at"] = self.sync.erp_accepted_at or timezone.now()
            if self.sync.state in (OrderSync.State.NEW, OrderSync.State.NEEDS_ATTENTION):
                # The ERP has it now: the normal path takes over (start-handling, or 409 = already handled).
                fields.update(state=OrderSync.State.SENT_TO_ERP, attempts=0, last_error="", error_kind="")
        self.save(step=step, call=_erp_call(result), message=f"resent: {result.message}", release=True, **fields)
        return self.sync.state


@dataclass(frozen=True)
class Step:
    """One step of the order's machine: `due` says it is the one to do, `do` does it and saves through
    OrderRun.save (the one writer of the order), returning True when another step may follow at once."""

    name: str  # SyncAttempt.Step: where it (or an unexpected failure in it) lands on the timeline
    due: Callable[[OrderRun], bool]
    do: Callable[[OrderRun], bool]


# The order's step machine, first due first. A new step (an ERP or VTEX action) is one row here, its function,
# and a SyncAttempt.Step for the timeline; has_work() says when the dispatcher comes back for the order.
STEPS: tuple[Step, ...] = (
    Step(SyncAttempt.Step.ERP_CANCEL, lambda run: run.sync.cancel_pending and not run.sync.erp_cancel_sent_at,
         OrderRun.step_cancel),
    # Before start-handling: an order the ERP cancels is not start-handled (invoices wait for start-handling).
    Step(SyncAttempt.Step.VTEX_CANCEL, vtex_requests_due, vtex_requests_send),
    Step(SyncAttempt.Step.GET_ORDER, lambda run: run.sync.state == OrderSync.State.NEW, OrderRun.step_send_to_erp),
    Step(SyncAttempt.Step.START_HANDLING, lambda run: run.sync.state == OrderSync.State.SENT_TO_ERP,
         OrderRun.step_start_handling),
)


def _erp_call(result: erp.ErpResult) -> Call:
    return Call("POST", "erp", result.status, result.duration_ms, result.excerpt)


def order_process(*, sync_id: int, by: str = "schedule", due_only: bool = True, resend: bool = False,
                  stopping: Callable[[], bool] | None = None) -> str | None:
    """Claim the order and advance it (or resend it). None when another worker holds it (or it is not due)."""
    claim = order_claim(sync_id=sync_id, due_only=due_only)
    if claim is None:
        return None
    return order_work(claim, by=by, resend=resend, stopping=stopping)


def order_work(claim: Claim, *, by: str = "schedule", resend: bool = False,
               stopping: Callable[[], bool] | None = None) -> str:
    """Advance (or resend) a claimed order, and let go of its claim.

    stopping: checked between steps; once true, the order is released after the step in hand.
    """
    run = OrderRun(claim=claim, by=by, stopping=stopping)
    try:
        return run.resend() if resend else run.run()
    except Exception as exc:  # any failure (a bug, a broken store row) lands on the timeline and frees the order
        log.exception("order %s: unexpected error", run.sync.order_id)
        try:
            run.retry(step=run.step, message=f"internal error: {type(exc).__name__}: {str(exc)[:500]}",
                      kind=Kind.INTERNAL_ERROR)
        except ClaimLost:
            pass
        # If even that write failed (the database is down), the claim lapses within HUB_CLAIM_SECONDS.
        return run.sync.state
    finally:
        claims_forget([claim.token])
