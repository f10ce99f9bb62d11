"""The operations dashboard on the admin index, fed by the real flow against the sandbox over HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString
from django_q.models import Schedule

from core.models import Store
from core.stores import store_connect
from feeds.models import FeedConfig, FeedEvent
from feeds.queue_status import queue_status_refresh
from feeds.schedules import schedules_setup
from feeds.services import feeds_pull
from feeds.tasks import refresh_queue_status
from orders.charts import bar_chart_svg
from orders.dashboard import dashboard_build, vtex_side_build
from orders.models import OrderSync, SyncAttempt
from sandbox.server import Sandbox
from tests.conftest import TOKEN
from tests.helpers import run_sync

pytestmark = pytest.mark.django_db(transaction=True)
INDEX = "/admin/"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """The admin index, with the text and attributes of every element marked data-hub="store/figure"."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.html = html
        self.attrs: dict[str, dict[str, str | None]] = {}
        self._text: dict[str, list[str]] = {}
        self._open: list[tuple[str, str | None]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        key = dict(attrs).get("data-hub")
        if key:
            self.attrs[key] = dict(attrs)
            self._text[key] = []
        if tag not in VOID:
            self._open.append((tag, key))

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == tag:
                del self._open[index:]
                return

    def handle_data(self, data: str) -> None:
        for _, key in self._open:
            if key:
                self._text[key].append(data)

    def text(self, key: str) -> str:
        return " ".join("".join(self._text[key]).split())

    def number(self, key: str) -> int:
        return int(self.text(key).split()[0])

    def charts(self) -> list[tuple[int, list[int]]]:
        """(data-max, bar values) of each SVG chart, in page order."""
        found = []
        for svg in re.findall(r'<svg class="hub-chart".*?</svg>', self.html, flags=re.S):
            top = int(re.search(r'data-max="(\d+)"', svg).group(1))
            found.append((top, [int(v) for v in re.findall(r'<rect [^>]*data-value="(\d+)"', svg)]))
        return found


def _page(client: Client) -> Page:
    response = client.get(INDEX)
    assert response.status_code == 200
    return Page(response.content.decode())


def _states(page: Page, store: str = "acme") -> dict[str, int]:
    return {state: page.number(f"{store}/orders/{state}") for state in OrderSync.State.values}


def _pull_once() -> None:
    feeds_pull(deadline=time.monotonic() + 5, until_empty=True, readers=1)


@pytest.fixture
def more_sandboxes() -> Iterator[list[Sandbox]]:
    started: list[Sandbox] = []
    yield started
    for server in started:
        server.stop()


def _connect(more_sandboxes: list[Sandbox], name: str) -> tuple[Sandbox, Store]:
    server = Sandbox(app_token=TOKEN, seed=len(more_sandboxes) + 11).start()
    more_sandboxes.append(server)
    store = store_connect(name=name, account="sandbox", app_key="vtexappkey-sandbox-HUB", app_token=TOKEN,
                          base_url=server.url, erp_url=server.erp_url, erp_timeout=1.0).store
    return server, store


# --- orders by state ---------------------------------------------------------------------------

def test_it_counts_orders_by_state_and_links_each_count_to_the_filtered_order_list(sandbox, store, viewer_client):
    sandbox.create_orders(3)
    sandbox.fail_next("erp", 422, body='{"error": "unknown SKU"}')
    run_sync()
    parked = OrderSync.objects.get(state="needs_attention")

    page = _page(viewer_client)

    assert _states(page) == {"new": 0, "sent_to_erp": 0, "handling_started": 2, "canceled": 0,
                             "needs_attention": 1, "resolved": 0}
    link = page.attrs["acme/orders/needs_attention"]["href"]
    assert link == f"/admin/orders/ordersync/?store__id__exact={store.pk}&state__exact=needs_attention"
    assert f'<li class="hub-alert"><a href="{escape(link)}"' in page.html  # needs attention shows in red
    assert f'<li class="hub-zero"><a href="{escape(link.replace("needs_attention", "new"))}"' in page.html
    listing = viewer_client.get(link)
    assert listing.status_code == 200 and parked.order_id in listing.text
    handled = OrderSync.objects.filter(state="handling_started").values_list("order_id", flat=True)
    assert not any(order_id in listing.text for order_id in handled)


def test_it_flags_the_erp_as_failing_until_an_order_goes_through_again(sandbox, store, viewer_client):
    sandbox.create_orders(1)
    sandbox.fail_next("erp", 422, body='{"error": "unknown SKU"}')
    run_sync()

    erp = _page(viewer_client).text("acme/erp")
    assert erp.startswith("failing ERP refused the order: HTTP 422") and "unknown SKU" in erp

    sandbox.create_orders(1)
    run_sync()
    assert _page(viewer_client).text("acme/erp") == "ok"

    SyncAttempt.objects.update(created_at=timezone.now() - timedelta(minutes=16))
    assert _page(viewer_client).text("acme/erp") == "no calls in 15 min"


# --- health ---------------------------------------------------------------------------------------

def test_pull_and_dispatch_turn_late_then_down_when_they_stop_succeeding(sandbox, store, viewer_client, settings):
    run_sync()  # nothing to do, but both jobs succeed
    page = _page(viewer_client)
    assert (page.text("acme/verdict"), page.text("acme/verdict-cause")) == ("OK", "pulls and dispatches are succeeding")
    assert "acme/pull" not in page.attrs and "acme/dispatch" not in page.attrs  # a job tag only when late or down
    assert re.fullmatch(r"\d+ s ago", page.text("acme/pull-age"))
    assert "acme/warning/jobs" not in page.attrs and 'id="hub-warnings"' not in page.html

    now = timezone.now()
    Store.objects.update(last_pull_at=now - timedelta(seconds=200))
    page = _page(viewer_client)
    assert page.text("acme/pull") == "late" and "acme/dispatch" not in page.attrs
    assert page.text("acme/pull-age") == "3 min ago"
    assert page.text("acme/verdict") == "Late" and page.text("acme/verdict-cause") == "no successful pull for 3 min"
    assert 'class="hub-badge hub-v-late" data-hub="acme/pull"' in page.html

    Store.objects.update(last_pull_at=now - timedelta(seconds=1000), last_dispatch_at=None)
    page = _page(viewer_client)
    assert (page.text("acme/pull"), page.text("acme/dispatch")) == ("down", "down")
    assert page.text("acme/dispatch-age") == "never"
    assert page.text("acme/verdict") == "Down"
    assert page.text("acme/verdict-cause") == "no successful pull for 16 min; no finished dispatch run yet"
    # The early warning the alerts would send, from the same figures.
    assert "Down: no successful pull for 16 min" in page.text("acme/warning/jobs")
    assert 'class="hub-w-critical" data-hub="acme/warning/jobs"' in page.html

    settings.HUB_DOWN_AFTER_SECONDS = 2000  # the thresholds are settings
    assert _page(viewer_client).text("acme/pull") == "late"

    Store.objects.update(enabled=False)
    page = _page(viewer_client)
    assert (page.text("acme/verdict"), page.text("acme/verdict-cause")) == (
        "Disabled", "disabled: the jobs skip this store")
    assert "acme/pull" not in page.attrs  # a disabled store is not late


def test_it_shows_a_feed_not_configured_on_vtex_and_a_429_pause(sandbox, store, viewer_client):
    sandbox.feed_config = None
    _pull_once()

    page = _page(viewer_client)
    assert page.text("acme/feed") == ("Feed not configured on VTEX "
                                      "the feed is not configured on VTEX for this appKey")
    assert page.text("acme/verdict") == "Blocked"  # never read successfully, and waiting will not fix it
    assert page.text("acme/pull") == "down"
    assert "acme/paused" not in page.attrs

    sandbox.feed_config = {"filter": {"type": "FromWorkflow", "status": ["ready-for-handling"]},
                           "queue": {"visibilityTimeoutInSeconds": 250, "MessageRetentionPeriodInSeconds": 345600}}
    run_sync()
    until = timezone.now() + timedelta(minutes=10)
    Store.objects.update(vtex_paused_until=until)
    page = _page(viewer_client)
    assert page.text("acme/paused") == f"429: no call until {until:%Y-%m-%d %H:%M:%S} UTC"
    assert page.text("acme/verdict") == "Paused"
    assert page.text("acme/verdict-cause") == (f"VTEX answered 429 (too many requests): no call before "
                                               f"{until:%Y-%m-%d %H:%M:%S} UTC")

    Store.objects.update(vtex_paused_until=timezone.now() - timedelta(seconds=1))
    page = _page(viewer_client)
    assert "acme/paused" not in page.attrs and page.text("acme/verdict") == "OK"


# --- backlog --------------------------------------------------------------------------------------

def test_backlog_counts_pending_orders_and_uncommitted_events_with_the_retention_margin(sandbox, store, viewer_client):
    sandbox.create_orders(4)
    sandbox.commit_fault_rate = 1.0
    feeds_pull(deadline=time.monotonic() + 1, until_empty=True, readers=1)  # stored and queued, never committed
    assert FeedEvent.objects.filter(committed_at__isnull=True).count() == 4
    now = timezone.now()
    first, second = FeedEvent.objects.order_by("id")[:2]
    # Stored 3 minutes ago (the handle still lives: 250 s timeout); the change 3.5 days old (+30 s so the
    # margin reads 12 h 0 min for the next half minute).
    FeedEvent.objects.filter(pk=first.pk).update(current_change=now - timedelta(days=3, hours=12, seconds=-30),
                                                 received_at=now - timedelta(minutes=3))
    OrderSync.objects.filter(order_id=first.order_id).update(first_event_at=now - timedelta(hours=2, minutes=5))

    page = _page(viewer_client)
    assert (page.text("acme/pending"), page.text("acme/pending-age")) == ("4", "2 h 5 min")
    assert (page.text("acme/uncommitted"), page.text("acme/uncommitted-age")) == ("4", "3 min")
    assert page.text("acme/margin") == "12 h 0 min left"
    assert page.attrs["acme/margin"]["class"] == "hub-bad"  # under 24 h

    FeedConfig.objects.filter(store=store).update(retention_seconds=14 * 86400)
    page = _page(viewer_client)
    assert page.text("acme/margin") == "10 d 12 h left" and page.attrs["acme/margin"]["class"] == ""
    FeedConfig.objects.filter(store=store).delete()  # no FeedConfig: VTEX's 4-day minimum, 250 s visibility
    assert _page(viewer_client).text("acme/margin") == "12 h 0 min left"

    # Stored longer ago than the visibility timeout and its grace: the handle is dead and VTEX shows the
    # item again (or has it already); the hub no longer owes that commit.
    FeedEvent.objects.filter(pk=second.pk).update(received_at=now - timedelta(seconds=290))
    assert _page(viewer_client).text("acme/uncommitted") == "3"

    sandbox.commit_fault_rate = 0.0
    run_sync()  # commits the 3 live handles it stored; the dead one is left to VTEX's redelivery
    page = _page(viewer_client)
    assert (page.text("acme/pending"), page.text("acme/uncommitted")) == ("0", "0")
    assert "acme/margin" not in page.attrs
    assert sandbox.queue_size() == 1
    sandbox.make_all_visible()  # VTEX delivers it again; the repeat is stored and committed
    run_sync()
    assert sandbox.queue_size() == 0
    assert _page(viewer_client).text("acme/uncommitted") == "0"
    assert list(FeedEvent.objects.filter(committed_at__isnull=True)) == [second]  # keeps no commit date
    assert FeedEvent.objects.get(duplicate_of=second).committed_at is not None
    assert _states(page)["handling_started"] == 4


# --- VTEX's view of the queue ---------------------------------------------------------------------

def test_the_queue_status_job_stores_vtex_own_view_of_the_queue(sandbox, store, viewer_client):
    sandbox.create_orders(3)
    assert _page(viewer_client).text("acme/vtex-queue") == "not checked yet"
    sandbox.clock = lambda: time.time() + 600  # VTEX's oldest message is 10 minutes old

    assert refresh_queue_status() == "checked 1 feed queue(s), 0 failed"

    config = FeedConfig.objects.get(store=store)
    assert config.vtex_quantity == 3 and 600 <= config.vtex_oldest_age_seconds < 660
    [call] = [r for r in sandbox.requests if r.method == "GET" and r.path == "/api/orders/feed/config"]
    assert call.headers["x-vtex-api-appkey"] == "vtexappkey-sandbox-HUB" and call.status == 200
    page = _page(viewer_client)
    assert re.fullmatch(r"3 messages \(oldest 10 min old\), checked \d+ s ago", page.text("acme/vtex-queue"))
    assert "VTEX&#x27;s approximate queue" in page.html and "read but has not committed yet" in page.html
    FeedConfig.objects.update(vtex_checked_at=timezone.now() - timedelta(minutes=7, seconds=5))
    assert _page(viewer_client).text("acme/vtex-queue") == "3 messages (oldest 10 min old), checked 7 min ago"


def test_a_failed_queue_check_is_recorded_and_shown_not_raised(sandbox, store, viewer_client):
    sandbox.create_orders(2)
    refresh_queue_status()
    sandbox.fail_next("feed_config_get", 503)

    assert refresh_queue_status() == "checked 1 feed queue(s), 1 failed"

    page = _page(viewer_client)
    assert page.text("acme/vtex-error") == ("last check failed: GET /api/orders/feed/config: "
                                            "HTTP 503 503 Service Unavailable")
    assert page.text("acme/vtex-queue").startswith("2 messages")  # the last figures VTEX gave, with their time
    sandbox.feed_config = None
    assert refresh_queue_status() == "checked 1 feed queue(s), 1 failed"
    assert "HTTP 404" in _page(viewer_client).text("acme/vtex-error")

    sandbox.feed_config = {"filter": {"type": "FromWorkflow", "status": ["ready-for-handling"]},
                           "queue": {"visibilityTimeoutInSeconds": 250, "MessageRetentionPeriodInSeconds": 345600}}
    assert refresh_queue_status() == "checked 1 feed queue(s), 0 failed"
    assert "acme/vtex-error" not in _page(viewer_client).attrs
    assert FeedConfig.objects.get(store=store).queue_check_error == ""


def test_the_queue_check_leaves_paused_and_disabled_stores_alone(sandbox, store):
    Store.objects.update(vtex_paused_until=timezone.now() + timedelta(minutes=1))
    assert refresh_queue_status() == "checked 0 feed queue(s), 0 failed"
    assert queue_status_refresh(store=store).vtex_checked_at is None  # called directly: still no call
    Store.objects.update(vtex_paused_until=None, enabled=False)
    assert refresh_queue_status() == "checked 0 feed queue(s), 0 failed"
    assert [r for r in sandbox.requests if r.path == "/api/orders/feed/config"] == []
    assert FeedConfig.objects.get(store=store).vtex_checked_at is None


def test_a_429_on_the_queue_check_pauses_the_store(sandbox, store):
    sandbox.fail_next("feed_config_get", 429, headers={"Retry-After": "30"})
    before = timezone.now()
    assert refresh_queue_status() == "checked 1 feed queue(s), 1 failed"
    assert Store.objects.get(pk=store.pk).vtex_paused_until >= before + timedelta(seconds=29)


def test_setup_schedules_adds_the_queue_status_job_every_five_minutes(transactional_db):
    assert schedules_setup() == ["pull_feeds", "dispatch_orders", "refresh_queue_status", "reconcile_orders",
                                 "evaluate_alerts", "prune_history"]
    assert schedules_setup() == []
    rows = {s.name: (s.func, s.schedule_type, s.minutes, s.repeats) for s in Schedule.objects.all()}
    assert rows == {
        "pull_feeds": ("feeds.tasks.pull_feeds", Schedule.MINUTES, 1, -1),
        "dispatch_orders": ("orders.tasks.dispatch_orders", Schedule.MINUTES, 1, -1),
        "refresh_queue_status": ("feeds.tasks.refresh_queue_status", Schedule.MINUTES, 5, -1),
        "reconcile_orders": ("orders.tasks.reconcile_orders", Schedule.MINUTES, 15, -1),
        "evaluate_alerts": ("orders.tasks.evaluate_alerts", Schedule.MINUTES, 1, -1),
        "prune_history": ("orders.tasks.prune_history", Schedule.MINUTES, 1440, -1),
    }


# --- charts ---------------------------------------------------------------------------------------

def test_charts_show_orders_handled_and_failures_per_hour(sandbox, store, viewer_client):
    sandbox.create_orders(5)
    sandbox.fail_next("erp", 503, times=3)
    run_sync()
    assert SyncAttempt.objects.filter(outcome="retry").count() == 3
    now = timezone.now()
    # Everything in this hour but what the test moves, so an hour turning during run_sync cannot split the bars.
    SyncAttempt.objects.update(created_at=now)
    earlier = list(OrderSync.objects.order_by("id").values_list("pk", flat=True)[:2])
    SyncAttempt.objects.filter(order_id__in=earlier, step="start_handling").update(created_at=now - timedelta(hours=3))
    SyncAttempt.objects.filter(pk=SyncAttempt.objects.filter(outcome="retry").first().pk).update(
        created_at=now - timedelta(hours=25))  # out of the 24 hours

    [(handled_max, handled), (failed_max, failed)] = _page(viewer_client).charts()

    assert len(handled) == len(failed) == 24
    assert (handled_max, handled[-1], handled[-4], sum(handled)) == (3, 3, 2, 5)
    assert (failed_max, failed[-1], sum(failed)) == (2, 2, 2)


def test_the_chart_escapes_its_text_and_labels_every_sixth_hour():
    start = datetime(2025, 1, 1, 0, 0, tzinfo=timezone.get_current_timezone())
    svg = bar_chart_svg([(start + timedelta(hours=n), n % 5) for n in range(24)],
                        title='<b>"orders"</b> & more', color='red"><script>')

    assert isinstance(svg, SafeString)
    assert "<b>" not in svg and "<script>" not in svg
    assert "&lt;b&gt;&quot;orders&quot;&lt;/b&gt; &amp; more" in svg
    assert 'data-max="4"' in svg and '<text class="hub-chart-max"' in svg
    labels = re.findall(r">(\d\d:00)</text>", svg)
    assert labels == ["00:00", "06:00", "12:00", "18:00"]
    assert 'data-max="0"' in bar_chart_svg([], title="empty", color="#000") and "no data" in bar_chart_svg(
        [], title="empty", color="#000")


# --- who sees what --------------------------------------------------------------------------------

def test_a_viewer_sees_the_dashboard_but_no_run_now_buttons(sandbox, store, viewer_client):
    page = _page(viewer_client)
    assert 'id="hub-dashboard"' in page.html and page.text("acme/verdict") == "Down"
    assert "acme/run-pull" not in page.attrs and "Pull now" not in page.html


def test_an_operator_gets_run_now_forms_with_a_csrf_token(sandbox, store, operator_client):
    try:
        urls = [reverse("admin:core_store_run", args=[store.pk, kind]) for kind in ("pull", "dispatch")]
    except NoReverseMatch:
        pytest.skip("the run-now view (admin:core_store_run) is not in feeds/admin.py yet")
    page = _page(operator_client)
    for url in urls:
        form = re.search(rf'<form method="post" action="{re.escape(url)}">(.*?)</form>', page.html, flags=re.S)
        assert form and 'name="csrfmiddlewaretoken"' in form.group(1)
        assert '<input type="hidden" name="next" value="/admin/">' in form.group(1)  # back to the dashboard
    assert page.attrs["acme/run-pull"]["value"] == "Pull now"


def test_staff_without_the_order_view_permission_get_no_dashboard(store, transactional_db):
    client = Client()
    client.force_login(User.objects.create_user(username="nobody", password="pw-nobody", is_staff=True))
    page = _page(client)
    assert 'id="hub-dashboard"' not in page.html and "acme/verdict" not in page.attrs


# --- cost -----------------------------------------------------------------------------------------

def _queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(INDEX).status_code == 200
    return len(queries)


def test_the_dashboard_costs_the_same_queries_for_more_stores_and_orders(sandbox, store, more_sandboxes,
                                                                         admin_client_hub):
    second, _ = _connect(more_sandboxes, "shop1")
    sandbox.create_orders(3)
    second.create_orders(2)
    sandbox.fail_next("erp", 422)
    run_sync()
    _queries(admin_client_hub)  # warm up the session
    small = _queries(admin_client_hub)

    for name in ("shop2", "shop3"):
        server, _ = _connect(more_sandboxes, name)
        server.create_orders(20)
    second.create_orders(5)
    run_sync()
    assert (Store.objects.count(), OrderSync.objects.count()) == (4, 50)
    page = _page(admin_client_hub)
    assert [_states(page, name)["handling_started"] for name in ("acme", "shop1", "shop2", "shop3")] == [2, 7, 20, 20]

    assert _queries(admin_client_hub) == small
    with CaptureQueriesContext(connection) as queries:
        dashboard_build()
    assert len(queries) == 7
    with CaptureQueriesContext(connection) as queries:
        vtex_side_build()  # the page's sources and configurations on VTEX (issue 8)
    assert len(queries) == 3
