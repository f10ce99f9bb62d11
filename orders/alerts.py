"""Alerts: the health signals (orders.health_signals) turned into messages, by e-mail and webhook.

One incident sends one "firing" message, a reminder at most once per quiet period while it lasts (at once if
it gets worse), and one "resolved" message when it clears. Every incident is an `Alert` row: the history.
Deliveries happen after the rows are committed, never inside a transaction; a channel that fails records its
error on the alert and the others still get the message.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from integrationhub.http import new_session
from orders.dashboard import age_text, when
from orders.health_signals import Signal, health_signals
from orders.models import Alert, AlertChannel

log = logging.getLogger("hub.alerts")
FIRING, REMINDER, RESOLVED = "firing", "reminder", "resolved"
SEVERITY_RANK = {Alert.Severity.WARNING: 1, Alert.Severity.CRITICAL: 2}
LOOPBACK_NAMES = {"localhost"}


@dataclass
class Notice:
    """One message to send about one alert."""

    alert: Alert
    event: str  # firing, reminder or resolved


@dataclass
class AlertReport:
    firing: int = 0
    sent: int = 0
    resolved: int = 0
    failed_deliveries: int = 0
    notices: list[Notice] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.firing} firing, {self.sent} message(s) delivered, {self.resolved} resolved, "
                f"{self.failed_deliveries} delivery failure(s)")


def quiet_period() -> timedelta:
    return timedelta(minutes=float(getattr(settings, "HUB_ALERT_QUIET_MINUTES", 30)))


# --- channels ------------------------------------------------------------------------------------

def alert_channel_target_clean(*, kind: str, target: str) -> str:
    """The target as stored, or ValidationError: an e-mail address, or an https URL (http only on loopback)."""
    target = target.strip()
    if kind == AlertChannel.Kind.EMAIL:
        validate_email(target)
        return target
    parts = urlsplit(target)
    host = parts.hostname or ""
    if not host:
        raise ValidationError("Give the webhook's full URL, e.g. https://hooks.example.com/...")
    if parts.scheme == "https" or (parts.scheme == "http" and _loopback(host)):
        return target
    # The URL and each message would cross the network in clear text.
    raise ValidationError("A webhook URL must use https (plain http only to this machine: 127.0.0.1, ::1, localhost).")


def _loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def channels_for(store_id: int) -> list[AlertChannel]:
    return list(AlertChannel.objects.filter(Q(store__isnull=True) | Q(store_id=store_id), enabled=True)
                .order_by("pk"))


# --- evaluation ----------------------------------------------------------------------------------

def alerts_evaluate(*, now: datetime | None = None) -> AlertReport:
    """Compare the signals firing now with the open alerts, record the changes, then send what is due."""
    now = now or timezone.now()
    signals = {signal.key: signal for signal in health_signals(now=now)}
    report = AlertReport()
    with transaction.atomic():
        open_alerts = {(a.store_id, a.kind): a
                       for a in Alert.objects.select_for_update(of=("self",)).select_related("store")
                       .filter(state=Alert.State.FIRING)}
        for key, signal in signals.items():
            notice = _alert_update(open_alerts.get(key), signal, now)
            if notice is not None:
                report.notices.append(notice)
        for key, alert in open_alerts.items():
            if key not in signals:
                alert.state, alert.resolved_at = Alert.State.RESOLVED, now
                alert.save(update_fields=["state", "resolved_at"])
                report.resolved += 1
                if alert.last_sent_at is not None:  # nobody was told it fired: no need to tell it cleared
                    report.notices.append(Notice(alert, RESOLVED))
    report.firing = len(signals)
    for notice in report.notices:  # after the commit: no HTTP or SMTP inside the transaction
        delivered, failed = alert_deliver(notice=notice, now=now)
        report.sent += delivered
        report.failed_deliveries += failed
    return report


def _alert_update(alert: Alert | None, signal: Signal, now: datetime) -> Notice | None:
    if alert is None:
        alert = Alert.objects.create(store_id=signal.store_id, kind=signal.kind, severity=signal.severity,
                                     message=signal.message, first_at=now)
        return Notice(alert, FIRING)
    worse = SEVERITY_RANK[signal.severity] > SEVERITY_RANK[alert.severity]
    alert.severity, alert.message = signal.severity, signal.message  # the history shows the latest figures
    alert.save(update_fields=["severity", "message"])
    if alert.last_sent_at is None:
        return Notice(alert, FIRING)  # no channel has heard of it yet (none set up, or all failed): try again
    if worse or alert.last_sent_at <= now - quiet_period():
        return Notice(alert, REMINDER)
    return None


# --- delivery ------------------------------------------------------------------------------------

def alert_deliver(*, notice: Notice, now: datetime) -> tuple[int, int]:
    """Send one notice to every channel of its store; returns (delivered, failed) and records them on the alert."""
    alert = notice.alert
    delivered, errors = 0, []
    for channel in channels_for(alert.store_id):
        try:
            if channel.kind == AlertChannel.Kind.EMAIL:
                _send_email(channel, notice)
            else:
                _send_webhook(channel, notice)
        except DeliveryFailed as exc:
            errors.append(str(exc))
            log.warning("alert %s: %s", alert.pk, exc)
        else:
            delivered += 1
    changes: dict = {}
    if delivered:
        changes.update(deliveries=F("deliveries") + delivered, last_sent_at=now)
    if errors:
        changes["last_delivery_error"] = f"{when(now)}: " + "; ".join(errors)
    if changes:
        Alert.objects.filter(pk=alert.pk).update(**changes)
    return delivered, len(errors)


class DeliveryFailed(Exception):
    """A channel did not take the message. Its text names the channel by kind and host, never the full URL."""


def alert_text(notice: Notice) -> str:
    """One line, the same for every outlet: "[FIRING] critical · acme · Jobs late, down or blocked: ..."."""
    alert = notice.alert
    tag = {FIRING: "FIRING", REMINDER: "STILL FIRING", RESOLVED: "RESOLVED"}[notice.event]
    text = f"[{tag}] {alert.severity} · {alert.store.name} · {alert.get_kind_display()}"
    if notice.event == RESOLVED:
        return f"{text}: cleared after {_lasted(alert)}"
    return f"{text}: {alert.message}"


def _lasted(alert: Alert) -> str:
    end = alert.resolved_at or timezone.now()
    return age_text((end - alert.first_at).total_seconds())


def alert_payload(notice: Notice) -> dict:
    """The webhook body: Slack reads `text`; other receivers get the same facts as fields."""
    alert = notice.alert
    return {
        "text": alert_text(notice),
        "event": notice.event,
        "store": alert.store.name,
        "kind": alert.kind,
        "severity": alert.severity,
        "state": alert.state,
        "message": alert.message,
        "first_at": alert.first_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "alert_id": alert.pk,
    }


def _send_email(channel: AlertChannel, notice: Notice) -> None:
    alert = notice.alert
    public_url = getattr(settings, "HUB_PUBLIC_URL", "").rstrip("/")
    body = "\n".join([
        alert_text(notice), "",
        f"Store: {alert.store.name}",
        f"Signal: {alert.get_kind_display()} ({alert.severity})",
        f"Since: {when(alert.first_at)}",
        *([f"Cleared: {when(alert.resolved_at)}"] if alert.resolved_at else []),
        *([f"Dashboard: {public_url}/admin/"] if public_url else []),
        "",
        f"Reminders come at most every {int(quiet_period().total_seconds() // 60)} min while this lasts.",
    ])
    try:
        send_mail(subject=alert_text(notice)[:200], message=body, from_email=None, recipient_list=[channel.target])
    # SMTP errors come in many classes (smtplib, socket, ssl): one bad channel must not stop the others.
    except Exception as exc:
        raise DeliveryFailed(f"e-mail to {channel.target}: {type(exc).__name__}") from None


def _send_webhook(channel: AlertChannel, notice: Notice) -> None:
    host = channel.target_shown
    timeout = float(getattr(settings, "HUB_ALERT_WEBHOOK_TIMEOUT_SECONDS", 5.0))
    try:
        # No redirects: the receiver is told where to send once, when the channel is saved and validated.
        response = new_session(channel.target).post(channel.target, json=alert_payload(notice), timeout=timeout,
                                                    allow_redirects=False)
    except requests.Timeout:
        raise DeliveryFailed(f"webhook {host}: no answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        # requests' messages quote the URL, secret path included: name the class only.
        raise DeliveryFailed(f"webhook {host}: could not connect ({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"webhook {host}: HTTP {response.status_code}")
