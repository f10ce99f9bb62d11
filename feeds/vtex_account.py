"""One VTEX account as the hub talks to it: its client, and the pause after VTEX answers 429.

Used by the feed reader, the hook and feed configuration, the queue check, reconciliation and dispatch,
so every caller builds the client the same way and honours the same pause.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from feeds.models import Store
from feeds.vtex.client import VtexClient


def vtex_client(store: Store, *, timeout: float | None = None) -> VtexClient:
    """A client for the store's account; `timeout` defaults to HUB_HTTP_TIMEOUT_SECONDS."""
    return VtexClient(base_url=store.vtex_base_url, app_key=store.app_key, app_token=store.app_token,
                      timeout=settings.HUB_HTTP_TIMEOUT_SECONDS if timeout is None else timeout, store=store.name)


def store_pause(*, store_id: int, retry_after: float | None) -> None:
    """After a 429, no call goes to this VTEX account until Retry-After (60 s if none) has passed."""
    seconds = retry_after if retry_after is not None else settings.HUB_RATE_LIMIT_DEFAULT_SECONDS
    until = timezone.now() + timedelta(seconds=seconds)
    Store.objects.filter(pk=store_id).filter(Q(vtex_paused_until__isnull=True) | Q(vtex_paused_until__lt=until)).update(
        vtex_paused_until=until
    )
