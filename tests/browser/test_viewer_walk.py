"""A Viewer in a real headless Chromium walks every admin page after the ERP refused orders quoting their
customers, and reads no e-mail, document or phone anywhere (issue 6, "Customer data")."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import pytest

from integrationhub.personal_data import MASK
from tests.admin.test_personal_data import _customer_data, refused  # noqa: F401  (fixture)
from tests.browser.conftest import login

pytestmark = pytest.mark.django_db(transaction=True)

# Links that change something, leave the admin or only repeat a page with other filters or sorting.
SKIPPED = ("/logout/", "/password_change/", "/add/", "/delete/", "/act/", "/run/", "/jsi18n/")
MAX_PAGES = 120  # a bound, in case a page links to an endless family of pages


def _admin_link(base: str, href: str | None) -> str | None:
    """The page `href` points to, without query or fragment, if it is an admin page worth reading."""
    if not href or href.startswith(("#", "javascript:", "mailto:")):
        return None
    url = urljoin(base, href)
    parts = urlsplit(url)
    if parts.netloc != urlsplit(base).netloc or not parts.path.startswith("/admin/"):
        return None
    if any(fragment in parts.path for fragment in SKIPPED):
        return None
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _links(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "links => links.map(a => a.getAttribute('href'))")


def test_a_viewer_walking_every_admin_page_reads_no_customer_data(page, live_server, sandbox, store, viewer,
                                                                  refused):  # noqa: F811
    secrets = _customer_data(sandbox, refused)
    login(page, live_server, viewer)
    start = f"{live_server.url}/admin/"
    queue, seen, read = [start], {start}, []
    while queue and len(read) < MAX_PAGES:
        url = queue.pop(0)
        response = page.goto(url)
        read.append((url, response.status if response else None))
        html, text = page.content(), page.inner_text("body")
        leaked = [value for value in secrets if value in html or value in text]
        assert not leaked, f"{url} shows {leaked}"
        # The admin's nav (index, sidebar, breadcrumbs) and every link of the page's own content.
        hrefs = _links(page, "#nav-sidebar a, .breadcrumbs a, #content a")
        if page.locator("#result_list").count():
            # A changelist: its rows are objects; open the first and the last (the oldest and newest row),
            # and every order: they are few and the point.
            rows = _links(page, "#result_list tbody th a")
            opened = rows if "/orders/ordersync/" in url else rows[:1] + rows[-1:]
            hrefs = [h for h in hrefs if h not in rows] + opened
        for href in hrefs:
            target = _admin_link(url, href)
            if target and target not in seen:
                seen.add(target)
                queue.append(target)

    paths = [urlsplit(url).path for url, _ in read]
    assert len(read) < MAX_PAGES, "the walk did not end"
    # It did reach the pages where the ERP's answer and the raw payloads are shown.
    for expected in ("/admin/orders/ordersync/", "/admin/orders/syncattempt/", "/admin/feeds/feedevent/",
                     "/admin/core/store/", "/admin/feeds/feedconfig/"):
        assert expected in paths, expected
        assert any(p.startswith(expected) and p != expected for p in paths), f"no object opened under {expected}"
    orders = [p for p in paths if p.startswith("/admin/orders/ordersync/") and p.endswith("/change/")]
    assert len(orders) == len(refused)
    assert all(status == 200 for _, status in read), [r for r in read if r[1] != 200]

    page.goto(f"{live_server.url}{orders[0]}")
    timeline = page.inner_text("#hub-timeline")
    assert "failed validation" in timeline and f"customer {MASK} document {MASK} phone {MASK}" in timeline
