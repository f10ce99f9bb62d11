"""An administrator in a real headless Chromium: reads the dashboard, follows it to the parked order,
and edits the feed filter, which the sandbox VTEX then holds."""

from __future__ import annotations

import pytest

from feeds.models import FeedConfig
from orders.models import SyncAttempt
from tests.browser.conftest import login, shoot
from tests.helpers import run_sync

pytestmark = pytest.mark.django_db(transaction=True)


def test_dashboard_numbers_lead_to_the_needs_attention_orders(page, live_server, sandbox, store, administrator):
    sandbox.create_orders(4)
    sandbox.fail_next("erp", 422, body='{"error": "unknown SKU 4711"}')
    run_sync()
    from feeds.tasks import refresh_queue_status

    refresh_queue_status()

    login(page, live_server, administrator)
    page.goto(f"{live_server.url}/admin/")
    board = page.locator("#hub-dashboard")
    def shown(key: str) -> str:
        return board.locator(f'[data-hub="acme/{key}"]').text_content().strip()

    assert shown("orders/handling_started").startswith("3 ")
    assert shown("orders/needs_attention").startswith("1 ")
    assert shown("uncommitted") == "0"
    assert shown("feed") == "ok"
    last_erp = SyncAttempt.objects.filter(step="erp_send").latest("created_at", "id")
    assert shown("erp").startswith("ok" if last_erp.outcome == "ok" else "failing")
    assert board.locator("svg").count() == 2
    shoot(page, "dashboard")

    board.locator('[data-hub="acme/orders/needs_attention"]').click()
    page.wait_for_url("**state__exact=needs_attention**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1 and "unknown SKU 4711" in rows.first.inner_text()
    shoot(page, "order-list")


def test_administrator_edits_the_feed_filter_and_vtex_receives_it(page, live_server, sandbox, store, administrator):
    config = FeedConfig.objects.get(store=store)
    login(page, live_server, administrator)
    page.goto(f"{live_server.url}/admin/feeds/feedconfig/{config.pk}/change/")
    page.get_by_label("Canceled (canceled)").check()
    page.get_by_label("Invoiced (invoiced)").check()
    page.get_by_label("Handling shipping (handling)").uncheck()
    page.fill("#id_visibility_timeout_seconds", "300")
    shoot(page, "feed-filter-form")
    page.locator('input[name="_continue"]').click()

    page.wait_for_selector("ul.messagelist")
    assert "VTEX accepted" in page.inner_text("ul.messagelist") or "pushed" in page.inner_text("ul.messagelist")
    pushed = sandbox.feed_config
    assert pushed["filter"]["type"] == "FromWorkflow"
    assert sorted(pushed["filter"]["status"]) == ["cancel", "canceled", "invoiced", "ready-for-handling"]
    assert pushed["queue"]["visibilityTimeoutInSeconds"] == 300

    page.get_by_role("link", name="Load from VTEX").click()
    page.wait_for_selector("#drift-summary")
    assert "matches" in page.inner_text("#drift-summary")
    assert page.locator("tr.drift").count() == 0

    # Someone changes the feed on VTEX behind the hub's back: the page shows what drifted.
    sandbox.feed_config = {"filter": {"type": "FromWorkflow", "status": ["invoiced"]},
                           "queue": {"visibilityTimeoutInSeconds": 300, "MessageRetentionPeriodInSeconds": 345600}}
    page.reload()
    assert page.locator('tr.drift[data-field="statuses"]').count() == 1
    assert page.locator('tr.drift[data-field="visibility_timeout_seconds"]').count() == 0
    shoot(page, "feed-load-from-vtex-drift")
