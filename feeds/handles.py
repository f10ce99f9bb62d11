"""Feed handles the hub still owes VTEX: stored events whose handle is not committed yet.

VTEX's feed behaves like an SQS queue: a read hides the item for the feed's visibility timeout and gives a
handle; committing the handle deletes the item; when the timeout ends the item comes back with a new handle
and the old one is dead. The hub does not store the read time, so it measures from `received_at` (written
just after the read) with its copy of the timeout, FeedConfig.visibility_timeout_seconds:

- *live* until received_at + timeout - margin: a commit now still deletes the item, so a failed one is retried;
- *owed* until received_at + timeout + grace: VTEX may still hold the item, hidden, about to come back. `sync`
  is not idle and the dashboard counts it. Afterwards it has come back (stored again as a duplicate, with a
  handle of its own) or VTEX had deleted it after all (a commit whose answer was lost).

A stored repeat does not settle an older row early: VTEX can queue one eventId twice, so a repeat cannot
prove which copy came back.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from core.models import Store
from feeds.models import FeedConfig, FeedEvent

DEFAULT_VISIBILITY_SECONDS: int = FeedConfig._meta.get_field("visibility_timeout_seconds").default


def commit_margin(visibility: int) -> float:
    """Stop retrying this long before the timeout: the read came before received_at, and VTEX's clock is not ours."""
    return max(2.0, 0.1 * visibility)


def redelivery_grace(visibility: int) -> float:
    """How long after the timeout VTEX gets to show the item again before the hub stops waiting for it."""
    return max(10.0, 0.1 * visibility)


def visibility_of(config: FeedConfig | None) -> int:
    return config.visibility_timeout_seconds if config is not None else DEFAULT_VISIBILITY_SECONDS


def store_visibilities(*, store_ids: Iterable[int] | None = None) -> dict[int, int]:
    """Enabled stores (all, or these) -> their visibility timeout, in one query. Disabled stores are not read."""
    stores = Store.objects.filter(enabled=True)
    if store_ids is not None:
        stores = stores.filter(pk__in=list(store_ids))
    return {pk: DEFAULT_VISIBILITY_SECONDS if seconds is None else seconds
            for pk, seconds in stores.values_list("pk", "feed_config__visibility_timeout_seconds")}


def _uncommitted() -> QuerySet[FeedEvent]:
    # Without a handle there is nothing to commit: hook events (and malformed items) are never owed to VTEX.
    return FeedEvent.objects.filter(committed_at__isnull=True).exclude(handle="")


def events_owed(*, visibility: dict[int, int], now: datetime | None = None) -> QuerySet[FeedEvent]:
    """Events of these stores (store id -> visibility timeout) whose item VTEX may still hold uncommitted.

    The one definition behind `sync`'s idle check and the dashboard's uncommitted count.
    """
    now = now or timezone.now()
    window = Q()
    for store_id, seconds in visibility.items():
        window |= Q(store_id=store_id, received_at__gt=now - timedelta(seconds=seconds + redelivery_grace(seconds)))
    return _uncommitted().filter(window) if window else FeedEvent.objects.none()


def events_live(*, store_id: int, visibility: int, now: datetime | None = None) -> QuerySet[FeedEvent]:
    """Uncommitted events of a store whose handle still deletes the item: worth committing again."""
    now = now or timezone.now()
    since = now - timedelta(seconds=visibility - commit_margin(visibility))
    return _uncommitted().filter(store_id=store_id, received_at__gt=since)


def handles_owed(*, store_ids: Iterable[int] | None = None, now: datetime | None = None) -> int:
    """How many stored events of enabled stores (all, or these) VTEX may still hold: `sync` waits for 0."""
    return events_owed(visibility=store_visibilities(store_ids=store_ids), now=now).count()
