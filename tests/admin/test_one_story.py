"""The admin tells one story (issue 7): one health verdict per store, one text for VTEX's queue, one date
format, one "App token" row, and buttons that come back to where they were clicked."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from html import unescape

import pytest
from django.db.models import F
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.models import Store
from feeds.models import FeedConfig
from feeds.tasks import refresh_queue_status
from orders.admin import ERROR_CHARS
from orders.dashboard import JobHealth, queue_text, store_verdict, stores_health
from orders.models import OrderSync, SyncAttempt
from orders.tasks import process_order
from tests.admin.test_dashboard import Page, _page, _pull_once
from tests.helpers import run_sync

pytestmark = pytest.mark.django_db(transaction=True)
HUB_DATE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
# What Django's default en-us DATETIME_FORMAT prints ("Nov. 28, 2026, 2:03 p.m."): no hub page may show it.
DJANGO_DATE = re.compile(r"\b(?:Jan|Feb|March|April|May|June|July|Aug|Sept|Oct|Nov|Dec)\.? \d{1,2}, \d{4}|[ap]\.m\.")


def _job(badge: str, age: float | None = 30) -> JobHealth:
    return JobHealth(at=timezone.now() - timedelta(seconds=age) if age is not None else None, age_seconds=age,
                     badge=badge)


def _verdict(**signals):
    values = dict(enabled=True, pull=_job("ok"), dispatch=_job("ok"), feed_status="ok", feed_error="",
                  paused_until=None, erp_failing=False, erp_error="")
    values.update(signals)
    return store_verdict(**values)


# --- the verdict, signal by signal ------------------------------------------------------------------

@pytest.mark.parametrize(("signals", "status"), [
    ({}, "ok"),
    ({"pull": _job("late", 200)}, "late"),
    ({"dispatch": _job("down", 1000)}, "down"),
    ({"pull": _job("down", None)}, "down"),
    ({"feed_status": "failing", "feed_error": "ConnectionError"}, "failing"),  # though the last pull was recent
    ({"feed_status": "failing", "pull": _job("late", 200)}, "failing"),
    ({"feed_status": "failing", "pull": _job("down", 1000)}, "down"),
    ({"erp_failing": True, "erp_error": "HTTP 503"}, "failing"),
    ({"feed_status": "unauthorized", "pull": _job("down", 1000)}, "blocked"),
    ({"feed_status": "not_configured", "pull": _job("down", None)}, "blocked"),
    ({"paused_until": timezone.now() + timedelta(minutes=1), "pull": _job("late", 200)}, "paused"),
    ({"enabled": False, "feed_status": "failing", "pull": _job("disabled", 5000)}, "disabled"),
])
def test_each_combination_of_signals_gives_one_verdict(signals, status):
    assert _verdict(**signals).status == status


def test_the_verdict_says_why_in_the_hubs_words_and_keeps_vtex_words_apart():
    verdict = _verdict(feed_status="failing", feed_error="GET /api/orders/feed: ConnectionError")
    assert (verdict.label, verdict.cause) == ("Failing", "the last feed read failed")
    assert verdict.detail == "GET /api/orders/feed: ConnectionError"  # masked where it is shown
    down = _verdict(pull=_job("down", 1000), feed_status="failing", feed_error="ConnectionError")
    assert down.cause == "no successful pull for 16 min; the last feed read failed"
    assert not down.healthy and _verdict(pull=_job("late", 200)).healthy


def test_a_feed_that_fails_after_a_recent_pull_is_failing_on_every_page(sandbox, store, viewer_client):
    """The issue's case: "Last pull: OK 1 min ago" beside "Feed: Failing – ConnectionError"."""
    run_sync()
    Store.objects.update(base_url="http://127.0.0.1:9")  # nothing listens: connection refused
    _pull_once()

    [health] = stores_health()
    assert (health.verdict.status, health.pull.badge) == ("failing", "ok")  # the last success is recent
    assert "connection refused" in health.verdict.detail
    page = _page(viewer_client)
    assert (page.text("acme/verdict"), page.text("acme/verdict-cause")) == ("Failing", "the last feed read failed")
    assert re.fullmatch(r"\d+ s ago", page.text("acme/pull-age"))  # under "Last successful pull": no contradiction
    assert "acme/pull" not in page.attrs  # no "ok" tag beside a failing verdict

    store_page = Page(viewer_client.get(reverse("admin:core_store_change", args=[store.pk])).content.decode())
    assert (store_page.text("verdict"), store_page.text("verdict-cause")) == ("Failing", "the last feed read failed")
    assert "connection refused (127.0.0.1:9)" in store_page.text("verdict-detail")
    listing = viewer_client.get(reverse("admin:core_store_changelist")).content.decode()
    assert re.search(r'class="hub-verdict hub-v-failing" title="the last feed read failed: [^"]*connection refused'
                     r'[^"]*">Failing</span>', listing)


def test_refused_credentials_block_the_store_and_a_429_pauses_it(sandbox, store, viewer_client):
    store.app_token = "not-the-token"
    store.save()
    _pull_once()
    assert Store.objects.get(pk=store.pk).feed_status == "unauthorized"

    page = _page(viewer_client)
    assert page.text("acme/verdict") == "Blocked"
    assert page.text("acme/verdict-cause").startswith("VTEX refused the app key or token (401/403)")
    store_page = Page(viewer_client.get(reverse("admin:core_store_change", args=[store.pk])).content.decode())
    assert store_page.text("verdict-cause") == page.text("acme/verdict-cause")

    Store.objects.update(feed_status="ok", feed_error="", last_pull_at=timezone.now(), last_dispatch_at=timezone.now(),
                         vtex_paused_until=timezone.now() + timedelta(minutes=2))
    assert [h.verdict.status for h in stores_health()] == ["paused"]
    assert _page(viewer_client).text("acme/verdict") == "Paused"


def test_a_stale_pull_is_late_then_down_with_the_thresholds_from_settings(sandbox, store, settings):
    run_sync()
    Store.objects.update(last_pull_at=timezone.now() - timedelta(seconds=settings.HUB_LATE_AFTER_SECONDS + 20))
    assert stores_health()[0].verdict.status == "late"
    Store.objects.update(last_pull_at=timezone.now() - timedelta(seconds=settings.HUB_DOWN_AFTER_SECONDS + 20))
    assert stores_health()[0].verdict.status == "down"


# --- VTEX's queue: one source, one text -----------------------------------------------------------

def _queue_on(client: Client, url: str) -> str:
    html = client.get(url).content.decode()
    match = re.search(r'<span id="hub-vtex-queue"[^>]*>([^<]*)</span>', html)
    assert match, url
    return unescape(match.group(1))


def test_the_dashboard_the_feed_page_and_load_from_vtex_show_the_same_queue_text(sandbox, store, viewer_client):
    sandbox.create_orders(3)
    refresh_queue_status()  # the job's check: 3 messages
    run_sync()  # the hub reads and commits them: VTEX's queue is empty, the stored check is now old news
    sandbox.create_orders(2)
    frozen = time.time() + 600
    sandbox.clock = lambda: frozen  # VTEX's oldest message is 10 minutes old, and stays so
    config = FeedConfig.objects.get(store=store)
    feed_page = reverse("admin:feeds_feedconfig_change", args=[config.pk])

    live = _queue_on(viewer_client, reverse("admin:feeds_feedconfig_load", args=[config.pk]))

    assert live == "2 messages (oldest 10 min old), checked 0 s ago"
    shown = [_queue_on(viewer_client, feed_page), _page(viewer_client).text("acme/vtex-queue")]
    for text in shown:  # a second may pass between two pages
        assert re.fullmatch(r"2 messages \(oldest 10 min old\), checked [01] s ago", text), text

    FeedConfig.objects.update(vtex_checked_at=timezone.now() - timedelta(minutes=2, seconds=5))
    expected = "2 messages (oldest 10 min old), checked 2 min ago"
    assert _queue_on(viewer_client, feed_page) == _page(viewer_client).text("acme/vtex-queue") == expected
    html = viewer_client.get(feed_page).content.decode()
    assert "VTEX&#x27;s approximate queue" in html and "read but not committed yet" in html
    assert not re.search(r"\d\.\d{4,}", html)  # no raw float seconds


def test_the_queue_text_reads_the_same_for_every_figure():
    assert queue_text(quantity=None, oldest_age_seconds=None, checked_age_seconds=None) == "not checked yet"
    assert queue_text(quantity=0, oldest_age_seconds=0.0, checked_age_seconds=3) == "no messages, checked 3 s ago"
    assert queue_text(quantity=1, oldest_age_seconds=0.96, checked_age_seconds=130) == (
        "1 message (oldest 0 s old), checked 2 min ago")
    assert queue_text(quantity=28, oldest_age_seconds=32.4, checked_age_seconds=59) == (
        "28 messages (oldest 32 s old), checked 59 s ago")


# --- labels, dates, buttons -----------------------------------------------------------------------

def test_the_store_form_has_one_app_token_row_that_says_whether_one_is_set(admin_client_hub, viewer_client, store):
    url = reverse("admin:core_store_change", args=[store.pk])
    for client in (admin_client_hub, viewer_client):
        html = client.get(url).content.decode()
        assert len(re.findall(r"<label[^>]*>App token:</label>", html)) == 1, html.count("App token")
    editable = admin_client_hub.get(url).content.decode()
    assert "A token is set (write-only: it is never shown)" in editable
    assert "No token is set yet" in admin_client_hub.get(reverse("admin:core_store_add")).content.decode()


def test_pull_now_on_the_dashboard_comes_back_to_the_dashboard(operator_client, sandbox, store):
    page = _page(operator_client)
    url = reverse("admin:core_store_run", args=[store.pk, "pull"])
    form = re.search(rf'<form method="post" action="{re.escape(url)}">(.*?)</form>', page.html, flags=re.S).group(1)
    back_to = unescape(re.search(r'name="next" value="([^"]*)"', form).group(1))

    response = operator_client.post(url, {"next": back_to})

    assert response.status_code == 302 and response["Location"] == back_to == "/admin/"
    store_page = operator_client.get(reverse("admin:core_store_change", args=[store.pk])).content.decode()
    assert store_page.count(f'<input type="hidden" name="next" value="/admin/core/store/{store.pk}/change/">') == 2
    assert ">Pull now</button>" in store_page and ">Dispatch now</button>" in store_page


def test_every_date_on_the_hubs_pages_is_written_one_way(sandbox, store, admin_client_hub):
    sandbox.create_orders(1)
    run_sync()
    refresh_queue_status()
    sync = OrderSync.objects.get()
    attempt = SyncAttempt.objects.filter(order=sync).first()
    config = FeedConfig.objects.get(store=store)
    pages = [reverse("admin:orders_ordersync_change", args=[sync.pk]), reverse("admin:orders_ordersync_changelist"),
             reverse("admin:orders_syncattempt_changelist"),
             reverse("admin:orders_syncattempt_change", args=[attempt.pk]),
             reverse("admin:core_store_changelist"), reverse("admin:core_store_change", args=[store.pk]),
             reverse("admin:feeds_feedconfig_change", args=[config.pk]), "/admin/"]
    for url in pages:
        html = admin_client_hub.get(url).content.decode()
        assert not DJANGO_DATE.search(html), (url, DJANGO_DATE.search(html).group(0))
    order_page = admin_client_hub.get(pages[0]).content.decode()
    assert len(HUB_DATE.findall(order_page)) >= 5  # the fields, the timeline and the events


def test_a_long_error_is_cut_in_the_order_list_with_the_whole_text_as_its_tooltip(sandbox, store, admin_client_hub):
    sandbox.create_orders(1)
    sandbox.fail_next("erp", 422, body='{"error": "' + "unknown SKU 4711 " * 12 + '"}')
    run_sync()
    html = admin_client_hub.get(reverse("admin:orders_ordersync_changelist")).content.decode()
    cell = re.search(r'<td class="field-short_error"><span title="([^"]*)">([^<]*)</span></td>', html)
    assert cell and len(unescape(cell.group(2))) == ERROR_CHARS + 1 and cell.group(2).endswith("…")
    assert unescape(cell.group(1)).count("unknown SKU 4711") == 12
    assert "white-space: nowrap" in html  # ids, states and ages on one line


# --- after an action ------------------------------------------------------------------------------

def test_after_a_queued_action_the_order_page_says_so_and_reloads_itself_until_it_is_done(
        sandbox, store, operator_client, jobs_queued):
    sandbox.create_orders(1)
    sandbox.fail_next("erp", 422, body='{"error": "unknown SKU"}')
    run_sync()
    sync = OrderSync.objects.get(state="needs_attention")
    url = reverse("admin:orders_ordersync_change", args=[sync.pk])

    response = operator_client.post(reverse("admin:orders_ordersync_act", args=[sync.pk, "retry"]), follow=True)

    html = response.content.decode()
    assert re.search(r'<p id="hub-state">Sync state: <span[^>]*>New</span>', html)  # the new state, at once
    assert '<meta http-equiv="refresh" content="3">' in html
    assert "<strong>Retry now</strong> is queued" in html and "reloads every 3 s" in html

    process_order(sync.pk, "otto-operator")  # what the job cluster does with the queued task
    html = operator_client.get(url).content.decode()
    assert 'http-equiv="refresh"' not in html and 'id="hub-queued"' not in html
    assert re.search(r'<p id="hub-state">Sync state: <span[^>]*>Handling started</span>', html)

    operator_client.post(reverse("admin:orders_ordersync_act", args=[sync.pk, "resend"]))
    # Two minutes later, and the cluster never took the task (the whole timeline moves back: it stays in order).
    SyncAttempt.objects.filter(order=sync).update(created_at=F("created_at") - timedelta(minutes=2))
    html = operator_client.get(url).content.decode()
    assert 'http-equiv="refresh"' not in html  # it stops reloading and says why
    assert "has not started: is the job cluster" in html
