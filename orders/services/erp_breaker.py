"""The ERP circuit breaker, one per ERP connection.

After HUB_ERP_BREAKER_FAILURES failures in a row (no answer, 408/429/5xx), the breaker opens: no order goes
to that ERP for HUB_ERP_BREAKER_SECONDS, then one order probes it (breaker_gate) while the others wait; one
more failure opens it again at once, one success closes it. Orders that wait on an open breaker keep their place and their
attempts: an ERP outage never parks an order as needs attention, however long it lasts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from core.models import ErpConnection
from orders.models import OrderSync

PROBE_MARGIN_SECONDS = 5.0  # the probe's hold: one ERP call at its timeout, plus this


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


def breaker_gate(connection: ErpConnection) -> datetime | None:
    """None when this order may call the ERP now; else until when it should wait.

    A closed breaker costs nothing (this thread's copy of the row is read every few seconds). Once it has
    opened, the first order after the pause takes the probe (the pause is extended by one ERP call) and the
    others wait for its outcome: one request tests a recovering ERP, not every due order at once.
    """
    threshold = max(1, int(settings.HUB_ERP_BREAKER_FAILURES))
    if connection.breaker_failures < threshold:
        return None
    now = timezone.now()
    hold = now + timedelta(seconds=float(connection.timeout_seconds) + PROBE_MARGIN_SECONDS)
    if ErpConnection.objects.filter(Q(breaker_open_until__isnull=True) | Q(breaker_open_until__lte=now),
                                    pk=connection.pk, breaker_failures__gte=threshold).update(breaker_open_until=hold):
        return None  # the probe is ours
    row = ErpConnection.objects.filter(pk=connection.pk).values("breaker_failures", "breaker_open_until").first()
    if row is None or row["breaker_failures"] < threshold:
        connection.breaker_failures, connection.breaker_open_until = 0, None  # closed meanwhile by a success
        return None
    return row["breaker_open_until"] or hold


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
