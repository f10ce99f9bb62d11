"""Watching VTEX's side: each feed queue as VTEX sees it (GET /api/orders/feed/config), and whether VTEX still
has the hub's feed and hook configurations, with the re-apply that pushes them again.

VTEX deletes a feed configuration that sees no event for its whole retention, and a hook after 3 days
without notifications. A removed feed shows as a 404 read (feeds.services.feed_not_found, which also backs
the polling off); a removed hook as a 404 to the 5-minute job's GET (feeds.hook_config.hook_presence_check).
Both are re-applied from the dashboard, or by the job itself when HUB_AUTO_REAPPLY_CONFIG is on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from core.models import Store
from core.vtex.client import VtexError, VtexUnavailable
from core.vtex_account import store_pause, vtex_client
from feeds.feed_config import PushResult, feed_config_default, feed_config_push
from feeds.hook_config import hook_config_push, hook_presence_check
from feeds.models import FeedConfig
from feeds.services import feed_backoff_clear, feed_was_configured, vtex_log_add

log = logging.getLogger("hub.feeds")

def queue_check_error(config: FeedConfig | None) -> str:
    """The error of the last queue check, or "" when it succeeded (or never ran)."""
    return config.queue_check_error if config is not None else ""


def queue_status_refresh(*, store: Store) -> FeedConfig:
    """Ask VTEX how many messages wait in the store's feed and how old the oldest is; failures are recorded.

    `vtex_checked_at` is the time of the last successful check, so the figures shown are never newer
    than it. A store paused after a 429 is not called (the pause covers the whole account).
    """
    config = feed_config_default(store)
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
        config.queue_check_error = str(exc)[:2000]
        FeedConfig.objects.filter(pk=config.pk).update(queue_check_error=config.queue_check_error)
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
              "vtex_checked_at": timezone.now(), "queue_check_error": ""}
    FeedConfig.objects.filter(pk=config.pk).update(**fields)
    for name, value in fields.items():
        setattr(config, name, value)
    return config


def queue_status_refresh_all() -> list[FeedConfig]:
    """Refresh every enabled store not paused by a 429, one after the other (one cheap GET each)."""
    stores = Store.objects.filter(enabled=True).exclude(vtex_paused_until__gt=timezone.now())
    return [queue_status_refresh(store=store) for store in stores]


# --- the configurations themselves ------------------------------------------------------------------

REAPPLIABLE = ("feed", "hook")
AUTO = "auto re-apply (HUB_AUTO_REAPPLY_CONFIG)"


@dataclass(frozen=True)
class Applied:
    """A feed config push, and the hook push that followed it (None when the store keeps no hook)."""

    feed: PushResult
    hook: PushResult | None = None


def feed_config_apply(*, config: FeedConfig, by: str) -> Applied:
    """Push the hub's feed configuration; once VTEX takes it, read the feed at once and push the hook too.

    The hook shares the feed's filter: a store whose hook the hub keeps gets it pushed with the new filter,
    so hook and feed keep reporting the same changes (nothing is pushed when the feed push was refused).
    """
    feed = feed_config_push(config=config, by=by)
    if not feed.ok:
        return Applied(feed=feed)
    _feed_restored(store_id=config.store_id)
    keeps_hook = FeedConfig.objects.filter(pk=config.pk, hook_pushed_at__isnull=False).exists()
    return Applied(feed=feed, hook=hook_config_push(store=config.store, by=by) if keeps_hook else None)


def _feed_restored(*, store_id: int) -> None:
    """VTEX took the feed: read it at once, and drop "not configured", which would be stale until that read."""
    feed_backoff_clear(store_id=store_id)
    Store.objects.filter(pk=store_id, feed_status=Store.FeedStatus.NOT_CONFIGURED).update(
        feed_status=Store.FeedStatus.UNKNOWN, feed_error="")


def config_reapply(*, store: Store, what: str, by: str) -> PushResult:
    """Push the hub's copy of the feed or hook configuration again (after VTEX removed it); noted on the FeedConfig."""
    if what not in REAPPLIABLE:
        raise ValueError(f"cannot re-apply {what!r}: expected one of {', '.join(REAPPLIABLE)}")
    config = FeedConfig.objects.select_related("store").filter(store=store).first()
    if config is None:
        result = PushResult(ok=False, status=None, message="not sent: the store has no feed config in the hub")
    elif what == "feed":
        # The hook is not pushed along: re-apply restores what VTEX removed, nothing more.
        result = feed_config_push(config=config, by=by)
        if result.ok:
            _feed_restored(store_id=store.pk)
    else:
        result = hook_config_push(store=store, by=by)
    text = f"{what} re-applied by {by}: " + ("VTEX took it" if result.ok else "NOT taken") + f". {result.message}"
    log.info("store %s: %s", store.name, text)
    vtex_log_add(store_id=store.pk, text=text[:600])
    return result


@dataclass
class WatchReport:
    hooks_checked: int = 0
    hooks_missing: list[str] = field(default_factory=list)
    reapplied: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Empty when there is nothing to say (no hook kept, nothing re-applied): the job's result stays as it was."""
        parts = []
        if self.hooks_checked:
            parts.append(f"{self.hooks_checked} hook(s) checked, {len(self.hooks_missing)} missing")
        if self.reapplied:
            parts.append(f"re-applied: {', '.join(self.reapplied)}")
        return "; ".join(parts)


def vtex_configs_watch() -> WatchReport:
    """The job's second half: is each kept hook still on VTEX; and, when the setting says so, re-apply what is gone.

    The feed is not read here: its reader sees the 404 first. Auto re-apply only restores what VTEX had
    (a feed read or pushed before, a hook the hub pushed), and is tried again on each run until VTEX takes it.
    """
    report = WatchReport()
    stores = Store.objects.filter(enabled=True).exclude(vtex_paused_until__gt=timezone.now())
    kept = stores.filter(Q(feed_config__hook_pushed_at__isnull=False) | Q(feed_config__hook_present=True))
    for store in kept:
        present = hook_presence_check(store=store)
        report.hooks_checked += 1
        if present is False:
            report.hooks_missing.append(store.name)
    if not getattr(settings, "HUB_AUTO_REAPPLY_CONFIG", False):
        return report
    for store in stores.filter(feed_status=Store.FeedStatus.NOT_CONFIGURED):
        if feed_was_configured(store_id=store.pk) and config_reapply(store=store, what="feed", by=AUTO).ok:
            report.reapplied.append(f"feed of {store.name}")
    for store in stores.filter(feed_config__hook_pushed_at__isnull=False, feed_config__hook_present=False):
        if config_reapply(store=store, what="hook", by=AUTO).ok:
            report.reapplied.append(f"hook of {store.name}")
    return report
