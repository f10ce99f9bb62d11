"""Exponential backoff with jitter, bounded by HUB_RETRY_BASE_SECONDS and HUB_RETRY_MAX_SECONDS."""

from __future__ import annotations

import random

from django.conf import settings


def retry_delay(attempt: int, *, retry_after: float | None = None, rate_limited: bool = False) -> float:
    """Seconds to wait before try number `attempt + 1`. A 429 waits at least its Retry-After (60 s if none)."""
    base = float(settings.HUB_RETRY_BASE_SECONDS)
    cap = max(base, float(settings.HUB_RETRY_MAX_SECONDS))
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    # Jitter spreads the retries of many orders that failed together (a VTEX outage) over time.
    delay = random.uniform(max(base, ceiling / 2), ceiling)
    if rate_limited:
        delay = max(delay, retry_after if retry_after is not None else float(settings.HUB_RATE_LIMIT_DEFAULT_SECONDS))
    elif retry_after is not None:
        delay = max(delay, retry_after)
    return delay
