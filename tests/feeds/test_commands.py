"""The management commands as a user runs them: real processes, real database, real sandbox."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from core.models import ErpConnection, Store
from orders.models import OrderSync
from tests.conftest import TOKEN
from tests.db_url import subprocess_database_url
from tests.helpers import keys_by_order
from tests.processes import alive, children

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update({"DATABASE_URL": subprocess_database_url(), "DJANGO_SETTINGS_MODULE": "integrationhub.settings",
                "DJANGO_SECRET_KEY": "test-only", "HUB_RETRY_BASE_SECONDS": "0.1", "HUB_RETRY_MAX_SECONDS": "0.5",
                "HUB_IDLE_POLL_SECONDS": "0.1", "HUB_LOG_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1",
                # The same keys as this process: the subprocess reads the secrets the tests stored.
                "HUB_ENCRYPTION_KEYS": ",".join(settings.HUB_ENCRYPTION_KEYS),
                "HUB_ERP_CONNECTORS": ",".join(settings.HUB_ERP_CONNECTORS)})
    env.update(extra)
    return env


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=300)






def _connect_args(sandbox, token: str = TOKEN) -> list[str]:
    return ["connect_store", "acme", "--account", "sandbox", "--app-key", "vtexappkey-sandbox-HUB",
            "--app-token", token, "--base-url", sandbox.url, "--erp-url", sandbox.erp_url,
            "--erp-header", "Authorization: Bearer erp-secret-9931"]


def test_connect_store_twice_changes_nothing_and_never_prints_the_token(sandbox, transactional_db):
    first = _manage(*_connect_args(sandbox))
    assert first.returncode == 0, first.stderr
    store = Store.objects.get(name="acme")
    erp = ErpConnection.objects.get(store=store)
    assert (store.app_token, erp.headers) == (TOKEN, {"Authorization": "Bearer erp-secret-9931"})

    second = _manage(*_connect_args(sandbox))

    assert second.returncode == 0, second.stderr
    assert "unchanged" in second.stdout and "created" in first.stdout
    again = Store.objects.get(name="acme")
    assert again.updated_at == store.updated_at and Store.objects.count() == 1
    for out in (first, second):
        assert TOKEN not in out.stdout + out.stderr
        assert "erp-secret-9931" not in out.stdout + out.stderr


def test_connect_store_with_a_new_token_says_so_without_showing_it(sandbox, transactional_db):
    call_command(*_connect_args(sandbox), stdout=open(os.devnull, "w"))
    sandbox.app_token = "another-secret-token-77"  # rotated at VTEX first: connect_store checks the new one
    changed = _manage(*_connect_args(sandbox, token="another-secret-token-77"))
    assert changed.returncode == 0
    assert "updated (app_token)" in changed.stdout
    assert "another-secret-token-77" not in changed.stdout + changed.stderr


@pytest.mark.parametrize("bad, message", [
    (["--erp-url", "not a url"], "the ERP URL is not an http(s) URL"),
    (["--erp-header", "NoColonHere"], "an ERP header must look like 'Name: value'"),
    (["--app-token", " "], "app token is required"),
])
def test_connect_store_refuses_bad_input_and_writes_nothing(sandbox, transactional_db, bad, message):
    args = _connect_args(sandbox)
    flag = bad[0]
    if flag in args:
        args[args.index(flag) + 1] = bad[1]
    else:
        args += bad

    result = _manage(*args)

    assert result.returncode != 0
    assert message in result.stderr
    assert Store.objects.count() == 0 and ErpConnection.objects.count() == 0


def test_rerunning_connect_store_changes_only_the_options_given(sandbox, transactional_db, monkeypatch):
    monkeypatch.delenv("VTEX_APP_TOKEN", raising=False)
    call_command(*_connect_args(sandbox), stdout=open(os.devnull, "w"))
    out = io.StringIO()

    # No token, no ERP URL, no header: all kept.
    call_command("connect_store", "acme", "--erp-timeout", "5", stdout=out)

    assert "updated (erp timeout_seconds)" in out.getvalue()
    store = Store.objects.get(name="acme")
    assert (store.app_token, store.account, store.base_url) == (TOKEN, "sandbox", sandbox.url)
    assert (store.erp.url, store.erp.timeout_seconds) == (sandbox.erp_url, 5.0)
    assert store.erp.headers == {"Authorization": "Bearer erp-secret-9931"}
    assert TOKEN not in out.getvalue() and "erp-secret-9931" not in out.getvalue()


def test_any_header_option_replaces_all_stored_headers(sandbox, transactional_db, monkeypatch):
    call_command(*_connect_args(sandbox), stdout=open(os.devnull, "w"))
    monkeypatch.setenv("ERP_KEY", "k-123")

    call_command("connect_store", "acme", "--erp-header-env", "X-Api-Key=ERP_KEY", stdout=io.StringIO())

    assert ErpConnection.objects.get(store__name="acme").headers == {"X-Api-Key": "k-123"}


def test_sync_exits_0_when_idle_and_prints_a_summary(sandbox, transactional_db):
    assert _manage(*_connect_args(sandbox)).returncode == 0
    sandbox.create_orders(3)

    result = _manage("sync", "--until-idle", "--timeout", "60")

    assert result.returncode == 0, result.stderr
    assert "pulled" in result.stdout and "3 handling_started" in result.stdout and "idle" in result.stdout
    assert TOKEN not in result.stdout + result.stderr  # logs go to stderr at DEBUG here


def test_sync_exits_non_zero_on_timeout(sandbox, transactional_db):
    assert _manage(*_connect_args(sandbox)).returncode == 0
    sandbox.create_orders(1)
    sandbox.fail_next("erp", 503, times=1000)

    result = _manage("sync", "--until-idle", "--timeout", "3", HUB_MAX_ATTEMPTS="1000")

    assert result.returncode != 0
    assert "not idle after 3s" in result.stderr


def test_sync_for_an_unknown_store_is_a_clear_error(transactional_db):
    with pytest.raises(CommandError, match="no store named 'nope'"):
        call_command("sync", "--until-idle", "--store", "nope")


def test_a_sync_killed_mid_run_then_rerun_loses_nothing_and_doubles_nothing(sandbox, transactional_db):
    assert _manage(*_connect_args(sandbox)).returncode == 0
    sandbox.latency_ms = 15
    order_ids = sandbox.create_orders(120)
    # Output to files, not pipes: a pipe nobody reads would block the process instead of the kill.
    proc = subprocess.Popen([sys.executable, "manage.py", "sync", "--until-idle", "--timeout", "120"], cwd=ROOT,
                            env=_env(HUB_CLAIM_SECONDS="3"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(sandbox.erp_deliveries) < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    readers = children(proc.pid)  # `sync` reads the feed in a child process
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(0.5)
    assert readers and not [pid for pid in readers if alive(pid)], "the reader outlived sync"
    delivered_before = len(sandbox.erp_deliveries)
    assert 40 <= delivered_before < 120, "the kill must land in the middle of the run"
    assert OrderSync.objects.exclude(state="handling_started").exists()
    time.sleep(3.2)  # the killed process' claims expire (HUB_CLAIM_SECONDS=3)
    sandbox.make_all_visible()  # and so do the feed items it read but did not commit

    result = _manage("sync", "--until-idle", "--timeout", "120", HUB_CLAIM_SECONDS="3")

    assert result.returncode == 0, result.stdout + result.stderr
    assert dict(OrderSync.objects.values_list("order_id", "state")) == {o: "handling_started" for o in order_ids}
    keys = keys_by_order(sandbox)
    assert set(keys) == set(order_ids)
    assert all(len(k) == 1 for k in keys.values()), "an order went to the ERP with two different keys"
    accepted_first_time = Counter(d.order_id for d in sandbox.erp_deliveries if not d.replay)
    assert set(accepted_first_time.values()) == {1}
    handled = Counter(oid for oid, status in sandbox.start_handling_calls if status == 204)
    assert handled == {o: 1 for o in order_ids}
    assert sandbox.queue_size() == 0
