"""The admin on a 1400×900 screen, in a real headless Chromium: the order list fits, ids stay on one line, and
an order page whose action is queued shows the outcome by itself once the job cluster has done it."""

from __future__ import annotations

import pytest

from orders.models import OrderSync
from orders.tasks import process_order
from tests.admin.conftest import jobs_queued  # noqa: F401  (fixture: tasks wait in the queue)
from tests.browser.conftest import login
from tests.helpers import run_sync

pytestmark = pytest.mark.django_db(transaction=True)
WIDTH, HEIGHT = 1400, 900
LONG_ERROR = '{"error": "' + "the ERP could not map SKU 4711 to a warehouse item; " * 6 + '"}'


@pytest.fixture
def screen(browser):
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def test_the_order_list_fits_a_1400_px_screen_with_ids_on_one_line(screen, live_server, sandbox, store, operator):
    sandbox.create_orders(6)
    sandbox.fail_next("erp", 422, body=LONG_ERROR, times=2)
    run_sync()
    assert OrderSync.objects.filter(state="needs_attention").count() == 2

    login(screen, live_server, operator)
    screen.goto(f"{live_server.url}/admin/orders/ordersync/")
    rows = screen.locator("#result_list tbody tr")
    assert rows.count() == 6

    header = screen.locator("#result_list thead th").last
    assert header.inner_text().strip().lower() == "age"
    # The table scrolls inside its own box when too wide: the cells must lie inside that box, not only the page.
    visible = screen.locator("#changelist-form .results").bounding_box()
    right = min(WIDTH, visible["x"] + visible["width"])
    for cell in [header, *screen.locator("#result_list td.field-age").all()]:
        box = cell.bounding_box()
        assert box["x"] + box["width"] <= right, (box, visible)
    assert screen.evaluate("document.querySelector('#changelist-form .results').scrollWidth") <= visible["width"]
    assert screen.evaluate("document.documentElement.scrollWidth") <= WIDTH  # no sideways scrolling
    assert screen.locator("#result_list td.field-short_error").first.bounding_box()["width"] >= 200  # readable
    # A wrapped inline link breaks into several boxes; one box is one line.
    lines = screen.eval_on_selector_all("#result_list th.field-order_id a",
                                        "links => links.map(a => a.getClientRects().length)")
    assert lines == [1] * 6
    error = screen.locator("#result_list td.field-short_error span[title]").first
    cut, whole = error.inner_text(), error.get_attribute("title")  # the hub stores the error cut at its own length
    assert cut.endswith("…") and whole.startswith(cut[:-1]) and len(whole) > 3 * len(cut)


def test_after_retry_now_the_order_page_shows_the_new_state_without_a_reload(
        screen, live_server, sandbox, store, operator, jobs_queued):
    sandbox.create_orders(1)
    sandbox.fail_next("erp", 422, body='{"error": "unknown SKU 4711"}')
    run_sync()
    parked = OrderSync.objects.get(state="needs_attention")

    login(screen, live_server, operator)
    screen.goto(f"{live_server.url}/admin/orders/ordersync/{parked.pk}/change/")
    screen.get_by_role("button", name="Retry now").click()

    screen.wait_for_selector("#hub-queued")  # the task waits in the queue: the page says so
    assert "Retry now is queued" in screen.inner_text("#hub-queued")
    assert "New" in screen.inner_text("#hub-state")
    process_order(parked.pk, operator.username)  # the job cluster takes the task

    # No click, no reload by the test: the page reloads itself and then stops.
    screen.wait_for_function("() => !document.querySelector('#hub-queued')", timeout=15_000)
    assert "Handling started" in screen.inner_text("#hub-state")
    assert screen.locator('meta[http-equiv="refresh"]').count() == 0
    assert "Start handling" in screen.inner_text("#hub-timeline")
