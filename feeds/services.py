"""Feed reading: VTEX client -> stored events (with the order work they imply) -> committed handles."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone

from feeds.handles import DEFAULT_VISIBILITY_SECONDS, commit_margin, events_live, visibility_of
from feeds.leases import lease_release, lease_renew, lease_take, store_pull_lease
from feeds.models import FeedConfig, FeedEvent, Store
from feeds.vtex.client import FeedItem, VtexClient, VtexError, VtexUnavailable
from orders.services.events import ACTIONABLE_STATES, order_note_event
from orders.services.process import store_pause

log = logging.getLogger("hub.feeds")
MAXLOT = 10
COMMIT_RETRY_FIRST_SECONDS = 0.2
COMMIT_RETRY_MAX_SECONDS = 30.0


@dataclass
class PullReport:
    read: int = 0
    queued: int = 0
    ignored: int = 0
    duplicates: int = 0
    malformed: int = 0
    failed: int = 0
    committed: int = 0
    commit_retries: int = 0  # failed commits tried again while their handles were live
    errors: list[str] = field(default_factory=list)
    stores_busy: int = 0  # stores another process was already reading
    blocked: list[str] = field(default_factory=list)  # feeds that cannot be read until staff act

    def add(self, outcome: str) -> None:
        attr = {"queued": "queued", "ignored": "ignored", "duplicate": "duplicates",
                "malformed": "malformed", "failed": "failed"}[outcome]
        setattr(self, attr, getattr(self, attr) + 1)

    def merge(self, other: PullReport) -> None:
        for name in ("read", "queued", "ignored", "duplicates", "malformed", "failed", "committed", "commit_retries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors += other.errors
        self.blocked += other.blocked

    def summary(self) -> str:
        text = (f"pulled {self.read} event(s): {self.queued} queued, {self.ignored} ignored, "
                f"{self.duplicates} duplicate, {self.malformed} malformed, {self.failed} failed; "
                f"{self.committed} committed")
        text += f" ({self.commit_retries} commit retries)" if self.commit_retries else ""
        return text + (f"; errors: {'; '.join(self.errors[-3:])}" if self.errors else "")


def vtex_client(store: Store) -> VtexClient:
    return VtexClient(base_url=store.vtex_base_url, app_key=store.app_key, app_token=store.app_token,
                      timeout=settings.HUB_HTTP_TIMEOUT_SECONDS)


def _json_safe(raw: Any) -> Any:
    try:
        json.dumps(raw)
        return raw
    except (TypeError, ValueError):
        return repr(raw)


def _dedup_keys(item: FeedItem) -> list[tuple]:
    """The two ways VTEX repeats an event: the same eventId, or the same change under a new eventId."""
    keys: list[tuple] = []
    if item.event_id:
        keys.append(("id", item.event_id))
    if item.current_change:
        keys.append(("change", item.order_id, item.state, item.current_change))
    return keys


def _originals(store: Store, items: list[FeedItem]) -> dict[tuple, FeedEvent]:
    """First sightings already stored for any item of the batch, by dedup key (one query)."""
    match = Q()
    for item in items:
        if item.event_id:
            match |= Q(event_id=item.event_id)
        if item.current_change:
            match |= Q(order_id=item.order_id, state=item.state, current_change=item.current_change)
    if not match:
        return {}
    found: dict[tuple, FeedEvent] = {}
    rows = (FeedEvent.objects.filter(match, store=store, duplicate_of__isnull=True)
            .exclude(outcome=FeedEvent.Outcome.MALFORMED).only("pk", "event_id", "order_id", "state", "current_change"))
    for event in rows:
        for key in _dedup_keys(FeedItem(raw=None, event_id=event.event_id, order_id=event.order_id,
                                        state=event.state, current_change=event.current_change)):
            found.setdefault(key, event)
    return found


def _outcome_of(store: Store, item: FeedItem) -> tuple[str, str]:
    """What the event asks for, noted on the order. A failure is kept on the event, not raised."""
    if item.state not in ACTIONABLE_STATES:
        return FeedEvent.Outcome.IGNORED, ""
    try:
        with transaction.atomic():  # savepoint: a bug here must not lose the rest of the batch
            return order_note_event(store=store, order_id=item.order_id, state=item.state,
                                    happened_at=item.current_change), ""
    except Exception as exc:
        log.exception("event %s for order %s could not be processed", item.event_id, item.order_id)
        return FeedEvent.Outcome.FAILED, f"{type(exc).__name__}: {exc}"[:2000]


def events_store_batch(*, store: Store, items: list[FeedItem], source: str = FeedEvent.Source.FEED) -> list[FeedEvent]:
    """Store a batch in one transaction (every item or none) and note the order work it asks for.

    Repeats are stored too, pointing at their first sighting, and do nothing. The store row is locked
    for the transaction, so two readers of one feed (or feed and hook) cannot both take an event as new.
    """
    with transaction.atomic():
        Store.objects.select_for_update().filter(pk=store.pk).values_list("pk", flat=True).first()
        seen = _originals(store, [item for item in items if not item.problem])
        events: list[FeedEvent] = []
        repeats: list[tuple[FeedEvent, tuple]] = []
        for item in items:
            event = FeedEvent(store=store, source=source, handle=item.handle, event_id=item.event_id,
                              order_id=item.order_id, state=item.state, last_state=item.last_state,
                              domain=item.domain, last_change=item.last_change, current_change=item.current_change,
                              payload=_json_safe(item.raw))
            events.append(event)
            if item.problem:
                event.outcome, event.error = FeedEvent.Outcome.MALFORMED, item.problem
                continue
            keys = _dedup_keys(item)
            known = next((key for key in keys if key in seen), None)
            if known is not None:
                event.outcome = FeedEvent.Outcome.DUPLICATE
                repeats.append((event, known))
                continue
            event.outcome, event.error = _outcome_of(store, item)
            for key in keys:
                seen[key] = event
        # First sightings first, so that repeats within this very batch can point at them.
        FeedEvent.objects.bulk_create([event for event in events if event.outcome != FeedEvent.Outcome.DUPLICATE])
        for event, key in repeats:
            event.duplicate_of = seen[key]
        FeedEvent.objects.bulk_create([event for event, _ in repeats])
    return events


def _store_health(store: Store, **fields: Any) -> None:
    Store.objects.filter(pk=store.pk).update(**fields)
    for name, value in fields.items():
        setattr(store, name, value)


def handles_commit(*, store: Store, client: VtexClient, handles: list[str], live_until: float, deadline: float,
                   report: PullReport) -> VtexError | None:
    """Commit `handles`, retrying 429, 5xx and timeouts with backoff until `live_until` or `deadline` (monotonic).

    Returns None once committed, else the last error. Past `live_until` the handles are dead: VTEX shows the
    items again after the visibility timeout and their new handles are committed as duplicates.
    """
    delay = COMMIT_RETRY_FIRST_SECONDS
    while True:
        try:
            client.feed_commit(handles)
            return None
        except VtexUnavailable as exc:
            error = exc
            if exc.rate_limited:
                store_pause(store_id=store.pk, retry_after=exc.retry_after)
        except VtexError as exc:
            return exc  # any other 4xx: the same call would get the same answer
        # Jitter, so that readers whose commits failed together do not retry together.
        wait = max(delay * random.uniform(0.5, 1.0), _seconds_paused(store))
        if time.monotonic() + wait >= min(live_until, deadline):
            return error
        log.info("commit of %d handle(s) failed (%s); again in %.1fs", len(handles), error, wait)
        report.commit_retries += 1
        time.sleep(wait)
        delay = min(2 * delay, COMMIT_RETRY_MAX_SECONDS)


def _commit_failed(store: Store, report: PullReport, message: str) -> None:
    _store_health(store, feed_status=Store.FeedStatus.FAILING, feed_error=message[:1000])
    report.errors.append(message)


def feed_read_once(*, store: Store, client: VtexClient, report: PullReport,
                   visibility: int = DEFAULT_VISIBILITY_SECONDS, deadline: float | None = None) -> str:
    """Read one lot, store it, commit its handles. Returns "items", "empty" or "error".

    `visibility`: the feed's visibility timeout (how long the handles live); `deadline`: monotonic, for retries.
    """
    read_at = time.monotonic()  # VTEX starts the visibility timeout when it answers, a little later
    try:
        items = client.feed_read(MAXLOT)
    except VtexUnavailable as exc:
        if exc.rate_limited:
            store_pause(store_id=store.pk, retry_after=exc.retry_after)
        _store_health(store, feed_status=Store.FeedStatus.FAILING, feed_error=str(exc)[:1000])
        report.errors.append(str(exc))
        return "error"
    except VtexError as exc:
        status = {404: Store.FeedStatus.NOT_CONFIGURED, 401: Store.FeedStatus.UNAUTHORIZED,
                  403: Store.FeedStatus.UNAUTHORIZED}.get(exc.status or 0, Store.FeedStatus.FAILING)
        message = "the feed is not configured on VTEX for this appKey" if exc.status == 404 else str(exc)
        _store_health(store, feed_status=status, feed_error=message[:1000])
        report.errors.append(message)
        report.blocked.append(f"{store.name}: {message}")
        return "error"
    if not items:
        _store_health(store, feed_status=Store.FeedStatus.OK, feed_error="", last_pull_at=timezone.now())
        return "empty"
    events = events_store_batch(store=store, items=items)
    report.read += len(items)
    for event in events:
        report.add(event.outcome)
    # Every stored item is committed, ignored and duplicate ones too: uncommitted items block the feed.
    handles = [event.handle for event in events if event.handle]
    if handles:
        live_until = read_at + visibility - commit_margin(visibility)
        error = handles_commit(store=store, client=client, handles=handles, live_until=live_until,
                               deadline=live_until if deadline is None else deadline, report=report)
        if error is not None:
            # Stored but not committed: the next pull retries while the handles live (events_commit_stored),
            # then VTEX shows the items again and they are stored as duplicates.
            _commit_failed(store, report, f"commit failed: {error}")
            return "error"
    FeedEvent.objects.filter(pk__in=[event.pk for event in events if event.handle]).update(committed_at=timezone.now())
    report.committed += len(handles)
    _store_health(store, feed_status=Store.FeedStatus.OK, feed_error="", last_pull_at=timezone.now())
    return "items"


def events_commit_stored(*, store: Store, client: VtexClient, visibility: int, before: datetime, deadline: float,
                         report: PullReport) -> None:
    """Commit the live handles that an earlier pull stored but did not commit (it crashed or ran out of time).

    Only events stored before `before`, when this pull began: its own readers commit theirs.
    """
    now, start = timezone.now(), time.monotonic()
    rows = list(events_live(store_id=store.pk, visibility=visibility, now=now).filter(received_at__lt=before)
                .order_by("received_at", "pk").values_list("pk", "handle", "received_at"))
    failed: VtexError | None = None
    for first in range(0, len(rows), MAXLOT):
        lot = rows[first:first + MAXLOT]
        # The oldest handle of the lot dies first.
        live_until = start + (lot[0][2] - now).total_seconds() + visibility - commit_margin(visibility)
        error = handles_commit(store=store, client=client, handles=[handle for _, handle, _ in lot],
                               live_until=live_until, deadline=deadline, report=report)
        if error is not None:
            failed = error
            continue  # younger lots may still be live
        FeedEvent.objects.filter(pk__in=[pk for pk, _, _ in lot]).update(committed_at=timezone.now())
        report.committed += len(lot)
    if failed is not None:
        _commit_failed(store, report, f"commit of stored handles failed: {failed}")
    elif rows:
        log.info("committed %d handle(s) stored by an earlier pull of %s", len(rows), store.name)


def _seconds_paused(store: Store) -> float:
    """A 429 seen by any worker (feed or dispatch) pauses the whole account."""
    until = Store.objects.filter(pk=store.pk).values_list("vtex_paused_until", flat=True).first()
    return max(0.0, (until - timezone.now()).total_seconds()) if until else 0.0


def feed_read_loop(*, store: Store, deadline: float, until_empty: bool,
                   stored_before: datetime | None = None) -> PullReport:
    """One reader: read, store, commit, again. Several run side by side on one feed, like SQS consumers.

    stored_before: first commit the live handles stored before then and never committed (one reader does).
    """
    report = PullReport()
    client = vtex_client(store)
    visibility = visibility_of(FeedConfig.objects.filter(store=store).first())
    try:
        while (left := deadline - time.monotonic()) > 0:
            if paused := _seconds_paused(store):
                if until_empty:
                    break  # `sync` comes back for it in its next round
                time.sleep(min(paused, left))
                continue
            if stored_before is not None:
                events_commit_stored(store=store, client=client, visibility=visibility, before=stored_before,
                                     deadline=deadline, report=report)
                stored_before = None
                continue
            result = feed_read_once(store=store, client=client, report=report, visibility=visibility,
                                    deadline=deadline)
            if result == "items":
                continue
            if until_empty:
                break
            time.sleep(min(settings.HUB_IDLE_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    finally:
        client.close()
        connections.close_all()  # this thread's connection
    return report


def feeds_pull(*, deadline: float, store_ids: Iterable[int] | None = None, until_empty: bool = True,
               readers: int | None = None) -> PullReport:
    """Read every enabled store's feed with HUB_PULL_CONCURRENCY readers each, until `deadline` (monotonic).

    until_empty: stop when the feeds answer an empty lot (the `sync` command); otherwise keep polling
    every HUB_IDLE_POLL_SECONDS until the deadline (the scheduled job), so a new event waits seconds,
    not a minute.
    """
    report = PullReport()
    started = timezone.now()
    stores = Store.objects.filter(enabled=True)
    if store_ids is not None:
        stores = stores.filter(pk__in=list(store_ids))
    # Short and renewed while we read, so the feed of a process that crashed is free again soon.
    lease = min(60.0, settings.HUB_CLAIM_SECONDS)
    stores = list(stores)
    mine = [store for store in stores if lease_take(name=store_pull_lease(store.pk), seconds=lease)]
    leases = [store_pull_lease(store.pk) for store in mine]
    report.stores_busy = len(stores) - len(mine)
    results: list[PullReport] = []

    def read(store: Store, n: int) -> None:
        # Reader 0 first commits what an earlier pull left uncommitted: with the lease held, no one else does.
        results.append(feed_read_loop(store=store, deadline=deadline, until_empty=until_empty,
                                      stored_before=started if n == 0 else None))

    threads = [threading.Thread(target=read, args=(store, n), name=f"pull-{store.name}-{n}", daemon=True)
               for store in mine for n in range(max(1, readers or settings.HUB_PULL_CONCURRENCY))]
    for thread in threads:
        thread.start()
    try:
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=lease / 4)
            lease_renew(names=leases, seconds=lease)
    finally:
        lease_release(names=leases)
    for result in results:
        report.merge(result)
    report.blocked = sorted(set(report.blocked))
    return report
