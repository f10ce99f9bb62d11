"""Early warnings: the health signals alerts are sent for, computed from the dashboard's own figures.

The dashboard (`orders.dashboard.store_healths`) owns each store's verdict, job ages, counts and backlog;
this module only decides which of them are worth waking someone for, and adds the two signals that need
a time window (needs-attention orders growing, the ERP failing for minutes). Alerts and /metrics read it.

Messages are the hub's own words: a verdict's `cause`, counts and ages. Never its `detail`, never an ERP or
VTEX answer, never an order's data: these messages leave the hub by e-mail and webhook.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, F, Max, Min, OuterRef, Q, Subquery
from django.utils import timezone

from orders.dashboard import ERP_STEPS, ERP_WINDOW, StoreHealth, age_text, store_healths
from orders.models import Alert, OrderSync, SyncAttempt

Kind, Severity = Alert.Kind, Alert.Severity
RETENTION_CRITICAL_SECONDS = 6 * 3600
# Verdicts worth an alert. Blocked is critical: it never heals by waiting. Failing and paused are left to the
# ERP signal and to `down`, which a failing feed turns into once nothing has succeeded for a while.
VERDICT_SEVERITY = {"late": Severity.WARNING, "down": Severity.CRITICAL, "blocked": Severity.CRITICAL}
LOOKBACK_WINDOWS = 4  # ERP failures older than this many windows are not read: the streak is critical by then


@dataclass(frozen=True)
class Signal:
    store_id: int
    store: str
    kind: str  # Alert.Kind
    severity: str  # Alert.Severity
    message: str

    @property
    def key(self) -> tuple[int, str]:
        return self.store_id, self.kind


def _minutes(name: str, default: float) -> timedelta:
    return timedelta(minutes=float(getattr(settings, name, default)))


def health_signals(*, now: datetime | None = None, healths: list[StoreHealth] | None = None) -> list[Signal]:
    """Every early warning firing now, for every enabled store (a disabled store is switched off on purpose).

    `healths`: the store figures when the caller has them already (the dashboard), so both show the same.
    """
    now = now or timezone.now()
    healths = [health for health in (store_healths(now=now) if healths is None else healths) if health.enabled]
    growth = _attention_growth(now)
    erp = _erp_streaks(now)
    signals: list[Signal] = []
    for health in healths:
        for found in (_retention(health), _jobs(health), _attention(health, growth.get(health.store_id, 0)),
                      _erp(health, erp.get(health.store_id), now)):
            if found is not None:
                signals.append(found)
    return signals


def _signal(health: StoreHealth, kind: str, severity: str, message: str) -> Signal:
    return Signal(store_id=health.store_id, store=health.name, kind=kind, severity=severity, message=message)


def _retention(health: StoreHealth) -> Signal | None:
    backlog = health.backlog
    if not backlog.margin_low or backlog.retention_margin is None:
        return None
    margin = backlog.retention_margin
    severity = Severity.CRITICAL if margin < RETENTION_CRITICAL_SECONDS else Severity.WARNING
    left = f"VTEX may drop it in {age_text(margin)}" if margin > 0 else "VTEX may have dropped it already"
    # Its age by VTEX's clock (its last change), which is what the retention counts from.
    return _signal(health, Kind.RETENTION, severity,
                   f"{backlog.uncommitted_events} feed event(s) not committed to VTEX; the oldest changed "
                   f"{age_text(backlog.retention_seconds - margin)} ago and {left} "
                   f"(retention {age_text(backlog.retention_seconds)})")


def _jobs(health: StoreHealth) -> Signal | None:
    verdict = health.verdict
    if verdict.status not in VERDICT_SEVERITY:
        return None
    # `cause` only: `detail` quotes VTEX or the ERP.
    return _signal(health, Kind.JOBS, VERDICT_SEVERITY[verdict.status], f"{verdict.label}: {verdict.cause}")


def _attention_growth(now: datetime) -> dict[int, int]:
    """Per store, orders parked as needs attention within the window and still parked (one grouped query).

    A parked order is left alone until staff act, so its updated_at is when it was parked: "count now minus
    count N minutes ago", without a snapshot (orders staff cleared meanwhile are not subtracted).
    """
    since = now - _minutes("HUB_ALERT_ATTENTION_MINUTES", 15)
    rows = (OrderSync.objects.filter(state=OrderSync.State.NEEDS_ATTENTION, updated_at__gte=since)
            .values_list("store_id").annotate(n=Count("id")).order_by())
    return dict(rows)


def _attention(health: StoreHealth, new: int) -> Signal | None:
    if new < int(getattr(settings, "HUB_ALERT_ATTENTION_GROWTH", 1)) or new == 0:
        return None
    total = next((c.count for c in health.counts if c.state == OrderSync.State.NEEDS_ATTENTION), new)
    window = age_text(_minutes("HUB_ALERT_ATTENTION_MINUTES", 15).total_seconds())
    return _signal(health, Kind.NEEDS_ATTENTION, Severity.WARNING,
                   f"{new} more order(s) need attention in the last {window} ({total} waiting for staff in all)")


@dataclass(frozen=True)
class ErpStreak:
    failures: int
    first_at: datetime
    last_at: datetime


def _erp_streaks(now: datetime) -> dict[int, ErpStreak]:
    """Per store, the ERP calls that failed since its last success, within a look-back (one grouped query)."""
    since = now - max(LOOKBACK_WINDOWS * _erp_window(), ERP_WINDOW)
    calls = SyncAttempt.objects.filter(step__in=ERP_STEPS, created_at__gte=since)
    last_ok = (calls.filter(outcome=SyncAttempt.Outcome.OK, order__store_id=OuterRef("order__store_id"))
               .order_by("-created_at").values("created_at")[:1])
    rows = (calls.filter(outcome__in=(SyncAttempt.Outcome.RETRY, SyncAttempt.Outcome.FAILED))
            .alias(last_ok=Subquery(last_ok))
            .filter(Q(last_ok__isnull=True) | Q(created_at__gt=F("last_ok")))
            .values("order__store_id").annotate(n=Count("id"), first=Min("created_at"), last=Max("created_at"))
            .order_by())
    return {row["order__store_id"]: ErpStreak(failures=row["n"], first_at=row["first"], last_at=row["last"])
            for row in rows}


def _erp_window() -> timedelta:
    return _minutes("HUB_ALERT_ERP_FAILING_MINUTES", 5)


def _erp(health: StoreHealth, streak: ErpStreak | None, now: datetime) -> Signal | None:
    """Every ERP call failing for at least the window: one refusal is not an incident.

    Still failing means the dashboard's rule (the last exchange of the last 15 minutes failed): retries back
    off to minutes apart, so a shorter look would resolve and re-fire the alert between two of them.
    """
    window = _erp_window()
    if streak is None or streak.failures < 2 or streak.first_at > now - window or streak.last_at < now - ERP_WINDOW:
        return None
    lasted = (now - streak.first_at).total_seconds()
    severity = Severity.CRITICAL if lasted >= 3 * window.total_seconds() else Severity.WARNING
    return _signal(health, Kind.ERP_FAILING, severity,
                   f"every ERP call has failed for {age_text(lasted)} ({streak.failures} failed calls, "
                   f"none succeeded)")
