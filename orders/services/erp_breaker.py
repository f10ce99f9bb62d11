"""The ERP circuit breaker, one per ERP connection.

After HUB_ERP_BREAKER_FAILURES failures in a row (no answer, 408/429/5xx), the breaker opens: no order goes
to that ERP for HUB_ERP_BREAKER_SECONDS, then the due orders probe it again; one more failure opens it
again at once, one success closes it. Orders that wait on an open breaker keep their place and their
attempts: an ERP outage never parks an order as needs attention, however long it lasts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from feeds.models import ErpConnection
from orders.models import OrderSync


def breaker_failure(connection: ErpConnection) -> datetime | None:
    """Count a failure; returns until when the breaker is open, if this failure opened it (or it was open)."""
    now = timezone.now()
    threshold = max(1, int(settings.HUB_ERP_BREAKER_FAILURES))
    until = now + timedelta(seconds=float(settings.HUB_ERP_BREAKER_SECONDS))
    ErpConnection.objects.filter(pk=connection.pk).update(
        breaker_failures=F("breaker_failures") + 1,
        breaker_open_until=Case(When(breaker_failures__gte=threshold - 1, then=Value(until)),
                                default=F("breaker_open_until")),
    )
    row = ErpConnection.objects.filter(pk=connection.pk).values("breaker_failures", "breaker_open_until").first()
    connection.breaker_failures = row["breaker_failures"] if row else connection.breaker_failures + 1
    open_until = row["breaker_open_until"] if row else None
    return open_until if open_until is not None and open_until > now else None


def breaker_success(connection: ErpConnection) -> None:
    """The ERP answered: close the breaker. Only written when this thread's copy knows of failures (the
    connection row is cached a few seconds), so a healthy ERP costs no query."""
    if connection.breaker_failures or connection.breaker_open_until:
        ErpConnection.objects.filter(pk=connection.pk).update(breaker_failures=0, breaker_open_until=None)
        connection.breaker_failures, connection.breaker_open_until = 0, None


def waiting_on_open_breaker(now: datetime) -> Q:
    """Orders whose next step calls an ERP whose breaker is open now (for the dispatcher to leave aside)."""
    needs_erp = Q(state=OrderSync.State.NEW) | Q(cancel_pending=True, erp_cancel_sent_at__isnull=True)
    return needs_erp & Q(store__erp__breaker_open_until__gt=now)
