"""VTEX's own view of each feed queue (GET /api/orders/feed/config), kept on FeedConfig for the dashboard."""

from __future__ import annotations

import logging

from django.utils import timezone

from feeds.models import FeedConfig, Store
from feeds.services import vtex_client
from feeds.stores import DEFAULT_FEED_STATUSES
from feeds.vtex.client import VtexError, VtexUnavailable
from orders.services.process import store_pause

log = logging.getLogger("hub.feeds")

# vtex_answer also holds the answer to a config push: only text with this prefix is ours to replace or clear.
CHECK_FAILED = "queue check failed: "


def queue_check_error(config: FeedConfig | None) -> str:
    """The error of the last queue check, or "" when it succeeded (or never ran)."""
    answer = config.vtex_answer if config is not None else ""
    return answer[len(CHECK_FAILED):] if answer.startswith(CHECK_FAILED) else ""


def queue_status_refresh(*, store: Store) -> FeedConfig:
    """Ask VTEX how many messages wait in the store's feed and how old the oldest is; failures are recorded.

    `vtex_checked_at` is the time of the last successful check, so the figures shown are never newer
    than it. A store paused after a 429 is not called (the pause covers the whole account).
    """
    config, _ = FeedConfig.objects.get_or_create(store=store, defaults={"statuses": DEFAULT_FEED_STATUSES})
    paused_until = Store.objects.filter(pk=store.pk).values_list("vtex_paused_until", flat=True).first()
    if paused_until and paused_until > timezone.now():
        return config
    client = vtex_client(store)
    try:
        info = client.feed_config_get()
    except VtexError as exc:
        if isinstance(exc, VtexUnavailable) and exc.rate_limited:
            store_pause(store_id=store.pk, retry_after=exc.retry_after)
        log.warning("store %s: feed queue check failed: %s", store.name, exc)
        config.vtex_answer = (CHECK_FAILED + str(exc))[:2000]
        FeedConfig.objects.filter(pk=config.pk).update(vtex_answer=config.vtex_answer)
        return config
    finally:
        client.close()
    return queue_status_record(config=config, quantity=info.quantity, oldest_age_seconds=info.oldest_age_seconds)


def queue_status_record(*, config: FeedConfig, quantity: int | None, oldest_age_seconds: float | None) -> FeedConfig:
    """Keep figures VTEX just gave (by this job or by *Load from VTEX*) as the latest check.

    Every page shows VTEX's queue from these fields only, so a live read never shows other numbers
    than the dashboard and the feed page do right after it.
    """
    fields = {"vtex_quantity": quantity, "vtex_oldest_age_seconds": oldest_age_seconds,
              "vtex_checked_at": timezone.now()}
    if config.vtex_answer.startswith(CHECK_FAILED):
        fields["vtex_answer"] = ""
    FeedConfig.objects.filter(pk=config.pk).update(**fields)
    for name, value in fields.items():
        setattr(config, name, value)
    return config


def queue_status_refresh_all() -> list[FeedConfig]:
    """Refresh every enabled store not paused by a 429, one after the other (one cheap GET each)."""
    stores = Store.objects.filter(enabled=True).exclude(vtex_paused_until__gt=timezone.now())
    return [queue_status_refresh(store=store) for store in stores]
