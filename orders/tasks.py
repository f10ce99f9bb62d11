"""django-q2 entry points for orders: a few lines each; the work is in orders.services."""

from __future__ import annotations

import time

from django.conf import settings

from orders.services.dispatch import orders_dispatch


def dispatch_orders() -> str:
    """Scheduled every minute: work due orders for HUB_JOB_BUDGET_SECONDS."""
    return orders_dispatch(deadline=time.monotonic() + settings.HUB_JOB_BUDGET_SECONDS).summary()
