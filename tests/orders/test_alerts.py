"""Alerts: the early-warning signals, delivered to a real webhook receiver on 127.0.0.1 and to Django's test
mailbox, once per incident, with reminders after the quiet period and a "resolved" message."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.utils import timezone

from core.leases import lease_release, lease_take
from core.models import Store
from feeds.models import FeedConfig, FeedEvent
from orders.alerts import alert_channel_target_clean, alerts_evaluate
from orders.health_signals import health_signals
from orders.models import Alert, AlertChannel, OrderSync, SyncAttempt
from orders.tasks import ALERTS_LEASE as LEASE, evaluate_alerts
from tests.admin.conftest import staff_groups_recreate

pytestmark = pytest.mark.django_db
CUSTOMER_EMAIL = "ana.silva@example.com"
WEBHOOK_SECRET = "T00000000/B00000000/XXXXsecretXXXX"


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers.get("Content-Type"), json.loads(body)))
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.received, server.status = [], 200
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_port}/hooks/{WEBHOOK_SECRET}"
    yield server
    server.shutdown()
    server.server_close()


def _store(name: str = "acme", **fields: object) -> Store:
    return Store.objects.create(name=name, account=name, base_url="http://127.0.0.1:9", app_key="key",
                                app_token="token", **fields)


def _healthy(store: Store, at: datetime) -> None:
    Store.objects.filter(pk=store.pk).update(last_pull_at=at, last_dispatch_at=at, feed_status="ok")


def _texts(webhook: ThreadingHTTPServer) -> list[str]:
    return [body["text"] for _, _, body in webhook.received]


def test_a_job_down_sends_one_firing_message_to_the_webhook_and_the_mailbox(webhook):
    store = _store()  # never pulled: its jobs are down
    AlertChannel.objects.create(store=store, kind="webhook", target=webhook.url)
    AlertChannel.objects.create(store=None, kind="email", target="ops@example.com")  # every store
    AlertChannel.objects.create(store=None, kind="email", target="off@example.com", enabled=False)

    report = alerts_evaluate()

    [(path, content_type, body)] = webhook.received
    assert path == f"/hooks/{WEBHOOK_SECRET}" and content_type == "application/json"
    assert body["text"].startswith("[FIRING] critical · acme · Jobs late, down or blocked: Down: no successful pull")
    assert (body["store"], body["kind"], body["severity"], body["event"]) == ("acme", "jobs", "critical", "firing")
    [message] = mail.outbox
    assert message.to == ["ops@example.com"] and message.subject == body["text"][:200]
    alert = Alert.objects.get()
    assert (alert.state, alert.deliveries, alert.last_delivery_error) == ("firing", 2, "")
    assert alert.last_sent_at is not None
    assert report.sent == 2 and report.firing == 1


def test_the_quiet_period_holds_then_a_reminder_then_resolved(webhook, settings):
    settings.HUB_ALERT_QUIET_MINUTES = 30
    store = _store()
    AlertChannel.objects.create(kind="webhook", target=webhook.url)
    start = timezone.now()

    alerts_evaluate(now=start)
    alerts_evaluate(now=start + timedelta(minutes=1))
    alerts_evaluate(now=start + timedelta(minutes=29))
    assert [text[:9] for text in _texts(webhook)] == ["[FIRING] "]

    alerts_evaluate(now=start + timedelta(minutes=31))
    alerts_evaluate(now=start + timedelta(minutes=32))
    assert _texts(webhook)[1].startswith("[STILL FIRING] critical · acme")
    assert len(webhook.received) == 2

    _healthy(store, start + timedelta(minutes=40))
    alerts_evaluate(now=start + timedelta(minutes=40))
    alerts_evaluate(now=start + timedelta(minutes=41))
    assert len(webhook.received) == 3
    assert _texts(webhook)[2] == "[RESOLVED] critical · acme · Jobs late, down or blocked: cleared after 40 min"
    alert = Alert.objects.get()
    assert (alert.state, alert.deliveries) == ("resolved", 3)
    assert alert.resolved_at == start + timedelta(minutes=40)


def test_a_signal_that_gets_worse_is_sent_at_once_despite_the_quiet_period(webhook):
    store = _store()
    start = timezone.now()
    _healthy(store, start - timedelta(seconds=200))  # past HUB_LATE_AFTER_SECONDS (180): late
    AlertChannel.objects.create(kind="webhook", target=webhook.url)

    alerts_evaluate(now=start)
    alerts_evaluate(now=start + timedelta(minutes=13))  # 980 s: past HUB_DOWN_AFTER_SECONDS (900)

    assert [body["severity"] for _, _, body in webhook.received] == ["warning", "critical"]
    assert _texts(webhook)[0].startswith("[FIRING] warning · acme · Jobs late, down or blocked: Late: no successful")
    assert _texts(webhook)[1].startswith("[STILL FIRING] critical · acme · Jobs late, down or blocked: Down: ")
    assert Alert.objects.count() == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_webhook_records_the_error_and_the_other_channels_still_get_the_message():
    _store()
    AlertChannel.objects.create(kind="webhook", target=f"http://127.0.0.1:{_closed_port()}/{WEBHOOK_SECRET}")
    AlertChannel.objects.create(kind="email", target="ops@example.com")

    report = evaluate_alerts()

    assert report == "1 firing, 1 message(s) delivered, 0 resolved, 1 delivery failure(s)"
    assert len(mail.outbox) == 1
    alert = Alert.objects.get()
    assert "webhook 127.0.0.1: could not connect (ConnectionError)" in alert.last_delivery_error
    assert WEBHOOK_SECRET not in alert.last_delivery_error and "XXXXsecret" not in alert.last_delivery_error
    assert alert.deliveries == 1


def test_a_webhook_answering_500_is_a_failed_delivery_retried_at_the_next_evaluation(webhook):
    _store()
    webhook.status = 500
    AlertChannel.objects.create(kind="webhook", target=webhook.url)
    start = timezone.now()

    alerts_evaluate(now=start)
    alert = Alert.objects.get()
    assert alert.last_delivery_error.endswith("webhook 127.0.0.1: HTTP 500")
    assert (alert.deliveries, alert.last_sent_at) == (0, None)

    webhook.status = 200
    alerts_evaluate(now=start + timedelta(minutes=1))  # nobody has heard of it yet: no quiet period to wait out
    assert [text[:9] for text in _texts(webhook)] == ["[FIRING] ", "[FIRING] "]
    assert Alert.objects.get().deliveries == 1


def test_alerts_carry_no_customer_data_even_when_the_erp_quotes_it(webhook):
    store = _store()
    now = timezone.now()
    Store.objects.filter(pk=store.pk).update(last_pull_at=now, feed_status="ok")  # dispatch never ran: down
    AlertChannel.objects.create(kind="webhook", target=webhook.url)
    AlertChannel.objects.create(kind="email", target="ops@example.com")
    answer = f'{{"error": "customer {CUSTOMER_EMAIL} has no tax id"}}'
    order = OrderSync.objects.create(store=store, order_id="1500000000001-01", state="needs_attention",
                                     last_error=f"ERP refused: {answer}", customer_email=CUSTOMER_EMAIL)
    for minutes in (12, 7, 1):
        attempt = SyncAttempt.objects.create(order=order, step="erp_send", outcome="retry", http_status=422,
                                             message=f"ERP answered 422: {answer}", response_excerpt=answer)
        SyncAttempt.objects.filter(pk=attempt.pk).update(created_at=now - timedelta(minutes=minutes))

    alerts_evaluate(now=now)

    assert {body["kind"] for _, _, body in webhook.received} == {"jobs", "erp_failing", "needs_attention"}
    sent = json.dumps([body for _, _, body in webhook.received]) + "".join(
        m.subject + m.body for m in mail.outbox)
    stored = " ".join(Alert.objects.values_list("message", flat=True))
    assert CUSTOMER_EMAIL not in sent and CUSTOMER_EMAIL not in stored
    assert "1500000000001" not in sent  # no order ids either
    messages = {body["kind"]: body["message"] for _, _, body in webhook.received}
    assert messages["erp_failing"] == "every ERP call has failed for 12 min (3 failed calls, none succeeded)"
    assert messages["needs_attention"] == ("1 more order(s) need attention in the last 15 min "
                                           "(1 waiting for staff in all)")


def test_the_erp_signal_needs_minutes_of_failures_and_clears_on_a_success():
    store = _store()
    now = timezone.now()
    _healthy(store, now)
    order = OrderSync.objects.create(store=store, order_id="1500000000002-01", state="new")

    def attempt(outcome: str, minutes_ago: float) -> None:
        row = SyncAttempt.objects.create(order=order, step="erp_send", outcome=outcome, http_status=503)
        SyncAttempt.objects.filter(pk=row.pk).update(created_at=now - timedelta(minutes=minutes_ago))

    attempt("retry", 2)
    attempt("retry", 1)
    assert health_signals(now=now) == []  # failing for 2 minutes only: not yet an incident

    attempt("retry", 6)
    [signal] = health_signals(now=now)
    assert (signal.kind, signal.severity) == ("erp_failing", "warning")

    attempt("ok", 0.5)
    assert health_signals(now=now) == []


def test_an_uncommitted_event_near_vtex_retention_is_a_warning_then_critical():
    store = _store()
    now = timezone.now()
    _healthy(store, now)
    FeedConfig.objects.create(store=store, retention_seconds=4 * 86400)
    FeedEvent.objects.create(store=store, event_id="e1", handle="h1", order_id="1500000000003-01",
                             state="ready-for-handling", payload={}, outcome="queued",
                             current_change=now - timedelta(days=3, hours=12))

    [signal] = health_signals(now=now)
    assert (signal.kind, signal.severity) == ("retention", "warning")
    assert signal.message == ("1 feed event(s) not committed to VTEX; the oldest changed 3 d 12 h ago and VTEX "
                              "may drop it in 12 h 0 min (retention 4 d 0 h)")

    FeedEvent.objects.update(current_change=now - timedelta(days=3, hours=20))
    [signal] = health_signals(now=now)
    assert signal.severity == "critical"


def test_disabled_stores_raise_nothing_and_a_concurrent_run_is_skipped(webhook):
    _store(enabled=False)
    assert health_signals() == []
    _store("beta")
    assert lease_take(name=LEASE)
    try:
        assert evaluate_alerts() == "another alert evaluation is running"
    finally:
        lease_release(names=[LEASE])
    assert Alert.objects.count() == 0


@pytest.mark.parametrize("kind,target", [("webhook", "https://hooks.example.com/x"),
                                         ("webhook", "http://127.0.0.1:9/x"), ("webhook", "http://[::1]:9/x"),
                                         ("webhook", "http://localhost/x"), ("email", "ops@example.com")])
def test_channel_targets_that_are_accepted(kind, target):
    assert alert_channel_target_clean(kind=kind, target=f" {target} ") == target


@pytest.mark.parametrize("kind,target", [("webhook", "http://hooks.example.com/x"), ("webhook", "ftp://127.0.0.1/x"),
                                         ("webhook", "hooks.example.com/x"), ("email", "not-an-address")])
def test_channel_targets_that_are_refused(kind, target):
    with pytest.raises(ValidationError):
        alert_channel_target_clean(kind=kind, target=target)


def _client(group: str) -> Client:
    if not Group.objects.filter(name=group).exists():
        staff_groups_recreate()
    user = User.objects.create_user(username=f"{group.lower()}-alerts", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_never_shows_a_webhook_url_in_full_and_stores_it_encrypted():
    store = _store()
    channel = AlertChannel.objects.create(store=store, kind="webhook",
                                          target=f"https://hooks.example.com/services/{WEBHOOK_SECRET}")
    Alert.objects.create(store=store, kind="jobs", severity="critical", message="Down: no successful pull yet",
                         first_at=timezone.now(), last_delivery_error="webhook hooks.example.com: HTTP 500")
    admin = _client("Administrator")

    urls = ["/admin/orders/alertchannel/", f"/admin/orders/alertchannel/{channel.pk}/change/",
            f"/admin/orders/alertchannel/{channel.pk}/delete/", "/admin/orders/alert/"]
    pages = [admin.get(url) for url in urls]

    assert [page.status_code for page in pages] == [200, 200, 200, 200]
    html = "".join(page.content.decode() for page in pages)
    assert "hooks.example.com" in html and "Down: no successful pull yet" in html
    assert "XXXXsecretXXXX" not in html and "/services/" not in html
    with connection.cursor() as cursor:
        cursor.execute("SELECT target FROM orders_alertchannel WHERE id = %s", [channel.pk])
        assert cursor.fetchone()[0].startswith("fernet:")


def test_administrators_edit_channels_with_the_url_checked_and_viewers_only_read():
    admin, viewer = _client("Administrator"), _client("Viewer")

    refused = admin.post("/admin/orders/alertchannel/add/", {"kind": "webhook", "target": "http://hooks.example.com/x",
                                                             "enabled": "on"})
    assert refused.status_code == 200 and "must use https" in refused.content.decode()
    saved = admin.post("/admin/orders/alertchannel/add/", {"kind": "webhook", "target": "https://hooks.example.com/k",
                                                           "enabled": "on"})
    assert saved.status_code == 302
    channel = AlertChannel.objects.get()
    kept = admin.post(f"/admin/orders/alertchannel/{channel.pk}/change/", {"kind": "webhook", "target": "",
                                                                          "enabled": ""})
    assert kept.status_code == 302
    channel.refresh_from_db()
    assert (channel.target, channel.enabled) == ("https://hooks.example.com/k", False)

    assert viewer.get("/admin/orders/alertchannel/").status_code == 200
    assert viewer.get("/admin/orders/alert/").status_code == 200
    assert viewer.get("/admin/orders/alertchannel/add/").status_code == 403
