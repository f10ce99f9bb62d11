"""Watching VTEX's side: a feed or hook configuration VTEX removed is found, backed off from, shown and re-applied."""

from __future__ import annotations

import logging
import re
import time
from datetime import timedelta

import pytest
import requests
from django.test import Client
from django.utils import timezone

from core.models import Store
from core.stores import store_connect
from feeds.hook_config import hook_config_delete, hook_config_push
from feeds.models import FeedConfig, FeedEvent, HookRejection
from feeds.services import FEED_RETRY_MAX_SECONDS, feed_backoff_start, feeds_pull
from feeds.tasks import refresh_queue_status
from tests.admin.conftest import admin_client_hub, administrator, viewer, viewer_client  # noqa: F401  (fixtures)
from tests.admin.test_dashboard import Page
from tests.conftest import TOKEN
from tests.helpers import run_sync, states

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "hook-secret-Ka93-never-shown-0042"
FEED_PATH = "/api/orders/feed"


def feed_reads(sandbox, since: int = 0) -> int:
    return len([r for r in sandbox.requests[since:] if r.method == "GET" and r.path == FEED_PATH])


def poll(seconds: float) -> None:
    """The scheduled job's way of reading: keep polling until the deadline, whatever the feed answers."""
    feeds_pull(deadline=time.monotonic() + seconds, until_empty=False)


def vtex_deletes_the_feed(sandbox) -> None:
    """As VTEX does after a whole retention without events, through VTEX's own API."""
    response = requests.delete(f"{sandbox.url}/api/orders/feed/config", timeout=5,
                               headers={"X-VTEX-API-AppKey": sandbox.app_key, "X-VTEX-API-AppToken": TOKEN})
    assert response.status_code in (200, 204) and sandbox.feed_config is None


def page(client: Client) -> Page:
    response = client.get("/admin/")
    assert response.status_code == 200
    return Page(response.content.decode())


def test_a_removed_feed_is_marked_and_read_far_less_often_until_it_answers(sandbox, store, caplog):
    sandbox.create_orders(2)
    run_sync()
    start = len(sandbox.requests)
    poll(1.5)
    healthy = feed_reads(sandbox, start)  # an empty feed is read every HUB_IDLE_POLL_SECONDS by each reader
    vtex_deletes_the_feed(sandbox)
    caplog.set_level(logging.INFO, logger="hub.feeds")

    start = len(sandbox.requests)
    poll(1.5)
    removed = feed_reads(sandbox, start)

    assert healthy >= 10 and 1 <= removed <= 3, (healthy, removed)  # one read per reader, then the wait
    marked = Store.objects.get(pk=store.pk)
    assert marked.feed_status == Store.FeedStatus.NOT_CONFIGURED and marked.feed_retry_seconds == 30
    assert timezone.now() + timedelta(seconds=25) < marked.feed_retry_at <= timezone.now() + timedelta(seconds=30)
    log = FeedConfig.objects.get(store=store).vtex_log.splitlines()
    assert len(log) == 1 and "feed configuration missing on VTEX (a feed read answered 404): VTEX removed it" in log[0]
    assert "VTEX removed it" in caplog.text
    assert sandbox.feed_config is None  # HUB_AUTO_REAPPLY_CONFIG is off: nothing pushed

    start = len(sandbox.requests)
    poll(1.0)
    assert feed_reads(sandbox, start) == 0  # still within the wait

    Store.objects.filter(pk=store.pk).update(feed_retry_at=timezone.now() - timedelta(seconds=1))
    start = len(sandbox.requests)
    poll(1.0)
    again = Store.objects.get(pk=store.pk)
    assert 1 <= feed_reads(sandbox, start) <= 3 and again.feed_retry_seconds == 60  # doubled once, not per reader
    assert len(FeedConfig.objects.get(store=store).vtex_log.splitlines()) == 1  # one detection, not one per read


def test_the_wait_doubles_up_to_ten_minutes_and_a_successful_read_ends_it(sandbox, store):
    Store.objects.filter(pk=store.pk).update(feed_retry_seconds=480, feed_retry_at=timezone.now())
    assert feed_backoff_start(store=store) == FEED_RETRY_MAX_SECONDS == 600
    Store.objects.filter(pk=store.pk).update(feed_retry_at=timezone.now())
    assert feed_backoff_start(store=store) == 600
    assert feed_backoff_start(store=store) == 600  # a second reader's 404 within the wait changes nothing

    run_sync()  # `sync` reads whatever the wait (a person asked), and the feed answers

    healthy = Store.objects.get(pk=store.pk)
    assert (healthy.feed_retry_at, healthy.feed_retry_seconds, healthy.feed_status) == (None, 0, "ok")


def test_the_dashboard_shows_the_removed_feed_and_reapply_restores_the_flow(sandbox, store, admin_client_hub,
                                                                           viewer_client):
    sandbox.create_orders(1)
    run_sync()
    vtex_deletes_the_feed(sandbox)
    poll(0.5)

    shown = page(admin_client_hub)
    assert shown.text("acme/feed-config").startswith("removed by VTEX")
    assert shown.text("acme/feed-retry").startswith("404: read again at")
    assert shown.attrs["acme/reapply-feed"]["value"] == "Re-apply"
    assert "acme/reapply-feed" not in page(viewer_client).attrs  # no feeds.change_feedconfig: no button
    assert "VTEX removed it" in shown.text("acme/vtex-log")

    action = re.search(r'<form class="hub-reapply" method="post" action="([^"]+)">', shown.html).group(1)
    response = admin_client_hub.post(action, {"next": "/admin/"}, follow=True)

    assert response.redirect_chain == [("/admin/", 302)]
    assert [str(m) for m in response.context["messages"]][0].startswith("Feed of acme re-applied. VTEX accepted it")
    assert sandbox.feed_config is not None
    assert set(sandbox.feed_config["filter"]["status"]) == set(FeedConfig.objects.get(store=store).statuses)
    restored = Store.objects.get(pk=store.pk)
    assert (restored.feed_retry_at, restored.feed_status) == (None, Store.FeedStatus.UNKNOWN)
    assert "feed re-applied by ada-admin: VTEX took it" in FeedConfig.objects.get(store=store).vtex_log.splitlines()[0]
    after = page(admin_client_hub)
    assert "acme/reapply-feed" not in after.attrs and after.text("acme/feed-config") == "not read yet"

    order_ids = sandbox.create_orders(3)
    run_sync()
    assert {order_id: states()[order_id] for order_id in order_ids} == {o: "handling_started" for o in order_ids}
    assert page(admin_client_hub).text("acme/feed-config") == "present"


def test_with_auto_reapply_on_the_feed_is_pushed_again_as_soon_as_a_read_finds_it_gone(sandbox, store, settings):
    settings.HUB_AUTO_REAPPLY_CONFIG = True
    run_sync()  # read once: VTEX had this feed
    vtex_deletes_the_feed(sandbox)

    poll(1.0)

    assert sandbox.feed_config is not None
    log = FeedConfig.objects.get(store=store).vtex_log.splitlines()
    assert "feed re-applied by auto re-apply (HUB_AUTO_REAPPLY_CONFIG): VTEX took it" in log[0]
    assert "VTEX removed it" in log[1]
    assert Store.objects.get(pk=store.pk).feed_status == Store.FeedStatus.OK  # read again within the same run
    order_ids = sandbox.create_orders(2)
    run_sync()
    assert {order_id: states()[order_id] for order_id in order_ids} == {o: "handling_started" for o in order_ids}


def test_auto_reapply_leaves_a_feed_vtex_never_had_to_staff(sandbox, store, settings):
    settings.HUB_AUTO_REAPPLY_CONFIG = True
    sandbox.feed_config = None  # never configured: staff review the default filter and save it

    poll(0.5)
    assert refresh_queue_status() == "checked 1 feed queue(s), 1 failed"

    assert sandbox.feed_config is None
    assert "save the feed config to push it" in FeedConfig.objects.get(store=store).vtex_log


@pytest.fixture
def hooked(sandbox, store, live_server, settings) -> Store:
    settings.HUB_PUBLIC_URL = live_server.url  # VTEX pings the hub while it saves the hook
    hooked = store_connect(name=store.name, hook_secret=SECRET).store
    pushed = hook_config_push(store=hooked, by="test")
    assert pushed.ok, pushed.message
    return hooked


def test_the_job_finds_a_hook_vtex_removed_and_reapply_pushes_it_back(sandbox, hooked, admin_client_hub):
    assert refresh_queue_status() == "checked 1 feed queue(s), 0 failed; 1 hook(s) checked, 0 missing"
    assert page(admin_client_hub).text("acme/hook-config").startswith("present")
    sandbox.hook_config = None  # VTEX removes a hook after 3 days without notifications

    assert refresh_queue_status() == "checked 1 feed queue(s), 0 failed; 1 hook(s) checked, 1 missing"

    config = FeedConfig.objects.get(store=hooked)
    assert config.hook_present is False and "hook missing on VTEX" in config.vtex_log.splitlines()[0]
    shown = page(admin_client_hub)
    assert shown.text("acme/hook-config").startswith("missing")
    action = re.search(r'action="([^"]+/reapply/hook/)"', shown.html).group(1)
    response = admin_client_hub.post(action, {"next": "/admin/"}, follow=True)
    assert [str(m) for m in response.context["messages"]][0].startswith("Hook of acme re-applied. VTEX accepted")
    assert sandbox.hook_config["hook"]["headers"] == {"X-Hub-Hook-Token": SECRET}
    assert FeedConfig.objects.get(store=hooked).hook_present is True
    assert SECRET not in response.content.decode()


def test_with_auto_reapply_on_the_job_pushes_a_removed_hook_and_leaves_a_deleted_one_alone(sandbox, hooked,
                                                                                            settings):
    settings.HUB_AUTO_REAPPLY_CONFIG = True
    sandbox.hook_config = None

    assert refresh_queue_status() == ("checked 1 feed queue(s), 0 failed; 1 hook(s) checked, 1 missing; "
                                      "re-applied: hook of acme")
    assert sandbox.hook_config is not None
    assert "hook re-applied by auto re-apply" in FeedConfig.objects.get(store=hooked).vtex_log.splitlines()[0]

    assert hook_config_delete(store=hooked, by="test").ok  # on purpose: no longer watched
    assert refresh_queue_status() == "checked 1 feed queue(s), 0 failed"
    assert sandbox.hook_config is None


def test_the_dashboard_counts_what_each_source_delivered_with_30_percent_of_notifications_dropped(
        sandbox, hooked, viewer_client):
    sandbox.hook_drop_rate = 0.3
    order_ids = sandbox.create_orders(20)
    assert sandbox.wait_for_hooks(30)
    run_sync()
    for _ in range(2):  # refused calls are counted for the dashboard
        Client().post("/hooks/vtex/acme/", b"{}", content_type="application/json",
                      headers={"X-Hub-Hook-Token": "not-the-secret-at-all"})

    shown = page(viewer_client)

    assert states() == {order_id: "handling_started" for order_id in order_ids}
    dropped = {d.order_id for d in sandbox.hook_deliveries
               if d.outcome == "dropped" and d.state == "ready-for-handling"}
    events = FeedEvent.objects.filter(store=hooked)
    hook_first = events.filter(source="hook", duplicate_of__isnull=True).count()
    feed_first = events.filter(source="feed", duplicate_of__isnull=True).count()
    assert dropped and hook_first and feed_first >= len(dropped)  # the feed caught at least what the hook missed
    assert shown.text("acme/source-hook") == f"{hook_first} first of {events.filter(source='hook').count()} received"
    assert shown.text("acme/source-feed").startswith(
        f"{feed_first} first of {events.filter(source='feed').count()} read: caught by the feed")
    assert shown.number("acme/source-duplicates") == events.filter(duplicate_of__isnull=False).count() > 0
    assert shown.text("acme/hook-rejections").startswith("2 × Wrong hook token (401), last")
    assert HookRejection.objects.get(store=hooked).count == 2
    assert shown.text("acme/hook-config").startswith("present") and shown.text("acme/feed-config") == "present"
