"""A real headless Chromium (Debian's package) driven by Playwright, against Django's live server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in the test thread; the ORM calls the tests make around
# it are plain synchronous code, which Django would otherwise refuse inside a loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("HUB_CHROMIUM", "/usr/bin/chromium")
# The README's screenshots are refreshed with HUB_UPDATE_SCREENSHOTS=1; other runs keep theirs in var/.
_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = _ROOT / ("docs" if os.environ.get("HUB_UPDATE_SCREENSHOTS") else "var") / "screenshots"


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not shutil.which(CHROMIUM):
        if os.environ.get("HUB_REQUIRE_BROWSER"):
            pytest.fail(f"browser tests need playwright and {CHROMIUM} (HUB_REQUIRE_BROWSER is set)")
        pytest.skip(f"no playwright or no Chromium at {CHROMIUM}: `apt-get install chromium` and "
                    "`pip install -r requirements-test.txt` (CI sets HUB_REQUIRE_BROWSER and installs both)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def shoot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    return target


from tests.admin.conftest import administrator, operator, viewer  # noqa: E402,F401  (fixtures)


def login(page, live_server, user) -> None:
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "pw-" + user.username)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
