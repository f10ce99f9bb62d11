"""Feed reading: VTEX client -> stored events (with the order work they imply) -> committed handles."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from feeds.models import FeedEvent, Store
from feeds.vtex.client import FeedItem, VtexClient, VtexError, VtexUnavailable
from orders.services.events import order_note_event
from orders.services.process import store_pause

log = logging.getLogger("hub.feeds")
MAXLOT = 10


@dataclass
class PullReport:
    read: int = 0
    queued: int = 0
    ignored: int = 0
    duplicates: int = 0
    malformed: int = 0
    failed: int = 0
    committed: int = 0
    errors: list[str] = field(default_factory=list)
    stores_busy: int = 0  # stores another process was already reading
    blocked: list[str] = field(default_factory=list)  # feeds that cannot be read until staff act

    def add(self, outcome: str) -> None:
        attr = {"queued": "queued", "ignored": "ignored", "duplicate": "duplicates",
                "malformed": "malformed", "failed": "failed"}[outcome]
        setattr(self, attr, getattr(self, attr) + 1)

    def summary(self) -> str:
        text = (f"pulled {self.read} event(s): {self.queued} queued, {self.ignored} ignored, "
                f"{self.duplicates} duplicate, {self.malformed} malformed, {self.failed} failed; "
                f"{self.committed} committed")
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


def _find_original(store: Store, item: FeedItem) -> FeedEvent | None:
    match = Q()
    if item.event_id:
        match |= Q(event_id=item.event_id)
    if item.current_change:
        match |= Q(order_id=item.order_id, state=item.state, current_change=item.current_change)
    if not match:
        return None
    return (FeedEvent.objects.filter(match, store=store, duplicate_of__isnull=True)
            .exclude(outcome=FeedEvent.Outcome.MALFORMED).order_by("pk").first())


def event_store(*, store: Store, item: FeedItem, source: str) -> FeedEvent:
    """Store one item and note the order work it asks for. Duplicates are stored too, but do nothing."""
    common = dict(store=store, source=source, handle=item.handle, event_id=item.event_id, order_id=item.order_id,
                  state=item.state, last_state=item.last_state, domain=item.domain, last_change=item.last_change,
                  current_change=item.current_change, payload=_json_safe(item.raw))
    if item.problem:
        return FeedEvent.objects.create(**common, outcome=FeedEvent.Outcome.MALFORMED, error=item.problem)
    original = _find_original(store, item)
    if original is None:
        try:
            with transaction.atomic():  # savepoint: a twin stored at this instant (hook vs feed) makes this fail
                event = FeedEvent.objects.create(**common, outcome=FeedEvent.Outcome.QUEUED)
        except IntegrityError:
            original = _find_original(store, item)
        else:
            try:
                with transaction.atomic():
                    outcome = order_note_event(store=store, order_id=item.order_id, state=item.state,
                                               happened_at=item.current_change)
            except Exception as exc:  # keep the event (and the batch); staff can reprocess it
                log.exception("event %s for order %s could not be processed", item.event_id, item.order_id)
                event.outcome, event.error = FeedEvent.Outcome.FAILED, f"{type(exc).__name__}: {exc}"[:2000]
            else:
                event.outcome = outcome
            event.save(update_fields=["outcome", "error"])
            return event
    return FeedEvent.objects.create(**common, outcome=FeedEvent.Outcome.DUPLICATE, duplicate_of=original)


def events_store_batch(*, store: Store, items: list[FeedItem], source: str = FeedEvent.Source.FEED) -> list[FeedEvent]:
    """Store a whole batch in one transaction: either every item is kept, or none is (and none is committed)."""
    with transaction.atomic():
        return [event_store(store=store, item=item, source=source) for item in items]


def _store_health(store: Store, **fields: Any) -> None:
    Store.objects.filter(pk=store.pk).update(**fields)
    for name, value in fields.items():
        setattr(store, name, value)


def feed_read_once(*, store: Store, client: VtexClient, report: PullReport) -> bool:
    """Read one lot, store it, commit its handles. True if the lot had items (there may be more)."""
    try:
        items = client.feed_read(MAXLOT)
    except VtexUnavailable as exc:
        if exc.rate_limited:
            store_pause(store_id=store.pk, retry_after=exc.retry_after)
        _store_health(store, feed_status=Store.FeedStatus.FAILING, feed_error=str(exc)[:1000])
        report.errors.append(str(exc))
        return False
    except VtexError as exc:
        status = {404: Store.FeedStatus.NOT_CONFIGURED, 401: Store.FeedStatus.UNAUTHORIZED,
                  403: Store.FeedStatus.UNAUTHORIZED}.get(exc.status or 0, Store.FeedStatus.FAILING)
        message = "the feed is not configured on VTEX for this appKey" if exc.status == 404 else str(exc)
        _store_health(store, feed_status=status, feed_error=message[:1000])
        report.errors.append(message)
        report.blocked.append(f"{store.name}: {message}")
        return False
    if not items:
        _store_health(store, feed_status=Store.FeedStatus.OK, feed_error="", last_pull_at=timezone.now())
        return False
    events = events_store_batch(store=store, items=items)
    report.read += len(items)
    for event in events:
        report.add(event.outcome)
    # Every stored item is committed, ignored and duplicate ones too: uncommitted items block the feed.
    handles = [event.handle for event in events if event.handle]
    try:
        if handles:
            client.feed_commit(handles)
    except VtexError as exc:
        if isinstance(exc, VtexUnavailable) and exc.rate_limited:
            store_pause(store_id=store.pk, retry_after=exc.retry_after)
        # Stored but not committed: VTEX shows them again after the visibility timeout, as duplicates.
        _store_health(store, feed_status=Store.FeedStatus.FAILING, feed_error=f"commit failed: {exc}"[:1000])
        report.errors.append(f"commit failed: {exc}")
        return False
    FeedEvent.objects.filter(pk__in=[event.pk for event in events if event.handle]).update(committed_at=timezone.now())
    report.committed += len(handles)
    _store_health(store, feed_status=Store.FeedStatus.OK, feed_error="", last_pull_at=timezone.now())
    return True


def store_claim_pull(*, store: Store, seconds: float) -> bool:
    """Only one reader per feed at a time: two would just fight over visibility timeouts."""
    now = timezone.now()
    return Store.objects.filter(pk=store.pk).filter(
        Q(pull_claimed_until__isnull=True) | Q(pull_claimed_until__lt=now)
    ).update(pull_claimed_until=now + timedelta(seconds=seconds)) == 1


def feeds_pull(*, deadline: float, store_ids: Iterable[int] | None = None, until_empty: bool = True) -> PullReport:
    """Read every enabled store's feed, one lot each in turn, until `deadline` (time.monotonic).

    until_empty: stop when every feed answered an empty lot (the `sync` command); otherwise keep
    polling every HUB_IDLE_POLL_SECONDS until the deadline (the scheduled job), so a new event
    waits seconds, not a minute.
    """
    report = PullReport()
    stores = Store.objects.filter(enabled=True)
    if store_ids is not None:
        stores = stores.filter(pk__in=list(store_ids))
    # Short and renewed every round, so the feed of a reader that crashed is free again soon.
    lease = min(60.0, settings.HUB_CLAIM_SECONDS)
    stores = list(stores)
    mine = [store for store in stores if store_claim_pull(store=store, seconds=lease)]
    report.stores_busy = len(stores) - len(mine)
    clients = {store.pk: vtex_client(store) for store in mine}
    try:
        active = list(mine)
        while active and time.monotonic() < deadline:
            got_any = False
            for store in list(active):
                if store.vtex_paused_until and store.vtex_paused_until > timezone.now():
                    continue
                had_items = feed_read_once(store=store, client=clients[store.pk], report=report)
                got_any |= had_items
                if not had_items and until_empty:
                    active.remove(store)
            Store.objects.filter(pk__in=[store.pk for store in mine]).update(
                pull_claimed_until=timezone.now() + timedelta(seconds=lease))
            if not got_any and active:
                time.sleep(min(settings.HUB_IDLE_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    finally:
        for client in clients.values():
            client.close()
        Store.objects.filter(pk__in=[store.pk for store in mine]).update(pull_claimed_until=None)
    return report
