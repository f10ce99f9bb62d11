"""django-q2 entry points for the feed: a few lines each; the work is in feeds.services."""

from __future__ import annotations

import time

from django.conf import settings

from feeds.services import feeds_pull


def pull_feeds() -> str:
    """Scheduled every minute: read every enabled store's feed for HUB_JOB_BUDGET_SECONDS."""
    report = feeds_pull(deadline=time.monotonic() + settings.HUB_JOB_BUDGET_SECONDS, until_empty=False)
    return report.summary()
