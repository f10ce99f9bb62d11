"""django-q2 entry points for the feed: a few lines each; the work is in feeds.services."""

from __future__ import annotations

import time

from django.conf import settings

from feeds.services import feeds_pull


def pull_feeds() -> str:
    """Scheduled every minute: read every enabled store's feed for HUB_JOB_BUDGET_SECONDS."""
    report = feeds_pull(deadline=time.monotonic() + settings.HUB_JOB_BUDGET_SECONDS, until_empty=False)
    return report.summary()


def pull_store(store_id: int) -> str:
    """Staff's "run now": read one store's feed until it is empty (or the job budget ends)."""
    report = feeds_pull(deadline=time.monotonic() + settings.HUB_JOB_BUDGET_SECONDS, store_ids=[store_id])
    return report.summary()
