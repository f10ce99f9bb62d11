"""One VTEX account as the hub talks to it: its client, its shared request budget, and the pause after a 429.

Used by the feed reader, the hook and feed configuration, the queue check, reconciliation and dispatch,
so every caller builds the client the same way and honours the same budget and pause.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from core.models import Store
from core.rate_limit import account_key, account_limiter, account_pause
from core.vtex.client import VtexClient


def vtex_client(store: Store, *, timeout: float | None = None) -> VtexClient:
    """A client for the store's account; `timeout` defaults to HUB_HTTP_TIMEOUT_SECONDS.

    Every request first takes a slot of the account's budget (core.rate_limit), shared by all its stores.
    """
    return VtexClient(base_url=store.vtex_base_url, app_key=store.app_key, app_token=store.app_token,
                      timeout=settings.HUB_HTTP_TIMEOUT_SECONDS if timeout is None else timeout, store=store.name,
                      before_call=account_limiter(store))


def account_store_ids(store: Store) -> list[int]:
    """The stores on the same VTEX account as `store` (itself included): the same account name at the same host."""
    key = account_key(store)
    same_name = Store.objects.filter(account__iexact=store.account.strip()).only("account", "environment", "base_url")
    return [other.pk for other in same_name if account_key(other) == key] or [store.pk]


def store_pause(*, store_id: int, retry_after: float | None) -> int:
    """After a 429, no call goes to the store's VTEX account (every store on it, every process) until Retry-After
    (60 s if none) has passed. Returns how many stores' pauses it set or lengthened."""
    seconds = retry_after if retry_after is not None else settings.HUB_RATE_LIMIT_DEFAULT_SECONDS
    until = timezone.now() + timedelta(seconds=seconds)
    store = Store.objects.filter(pk=store_id).only("account", "environment", "base_url").first()
    if store is None:
        return 0
    later = Q(vtex_paused_until__isnull=True) | Q(vtex_paused_until__lt=until)
    paused = Store.objects.filter(later, pk__in=account_store_ids(store)).update(vtex_paused_until=until)
    account_pause(key=account_key(store), until=until)  # processes mid-work stop at their next batch
    return paused
