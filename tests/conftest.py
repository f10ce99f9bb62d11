"""Shared fixtures: a real sandbox VTEX + ERP over HTTP on 127.0.0.1, and a store connected to it."""

from __future__ import annotations

import pytest

from sandbox.server import Sandbox

TOKEN = "sandbox-token-Zq81-never-shown"


@pytest.fixture(autouse=True)
def _call_counts_stay_in_the_test(request):
    """Calls counted in one test (core/call_counts.py buffers them per process) are not written in the next
    test's database, nor, at exit, in the developer's own database: each test starts with an empty buffer."""
    from core import call_counts

    call_counts.call_counts_discard()
    yield
    call_counts.call_counts_discard()


@pytest.fixture
def sandbox():
    server = Sandbox(app_token=TOKEN, seed=7, shuffle=True).start()
    yield server
    server.stop()


@pytest.fixture
def store(sandbox, transactional_db):
    from core.stores import store_connect

    return store_connect(
        name="acme", account=sandbox.account if hasattr(sandbox, "account") else "sandbox",
        app_key="vtexappkey-sandbox-HUB", app_token=TOKEN, base_url=sandbox.url, erp_url=sandbox.erp_url,
        erp_headers={"Authorization": "Bearer erp-secret-9931"}, erp_timeout=1.0,
    ).store
