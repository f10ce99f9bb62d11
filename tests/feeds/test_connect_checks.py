"""connect_store checks what it was given before saving: VTEX credentials (a read), the ERP URL (a HEAD)."""

from __future__ import annotations

import io
import socket

import pytest
from django.core.management import CommandError, call_command
from django.forms.models import model_to_dict

from core.models import ErpConnection, Store
from tests.conftest import TOKEN
from tests.feeds.test_commands import _manage

pytestmark = pytest.mark.django_db(transaction=True)


def _free_port() -> int:
    """A port nothing listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _args(sandbox, *, token: str = TOKEN, base_url: str | None = None, erp_url: str | None = None) -> list[str]:
    return ["connect_store", "acme", "--account", "sandbox", "--app-key", "vtexappkey-sandbox-HUB",
            "--app-token", token, "--base-url", base_url or sandbox.url, "--erp-url", erp_url or sandbox.erp_url,
            "--erp-header", "Authorization: Bearer erp-secret-9931"]


def _refused(args: list[str]) -> tuple[str, str]:
    """(what was printed, the error) of a connect_store that must fail."""
    out = io.StringIO()
    with pytest.raises(CommandError) as refused:
        call_command(*args, stdout=out)
    return out.getvalue(), str(refused.value)


def _snapshot() -> list[dict]:
    return [model_to_dict(row) | {"updated": getattr(row, "updated_at", None)}
            for row in [*Store.objects.order_by("pk"), *ErpConnection.objects.order_by("pk")]]


def test_good_credentials_and_a_live_erp_are_reported_ok_then_saved(sandbox):
    out = io.StringIO()

    call_command(*_args(sandbox), stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0] == "VTEX credentials: ok (feed configured)"
    assert lines[1] == "ERP: reachable (HTTP 405 to HEAD)"  # the sandbox's ERP knows only POST and GET
    assert lines[2].startswith("store acme created")
    assert Store.objects.filter(name="acme").count() == 1
    reads = [r for r in sandbox.requests if r.path == "/api/orders/feed/config"]
    assert [(r.method, r.headers["x-vtex-api-appkey"], r.headers["x-vtex-api-apptoken"]) for r in reads] == [
        ("GET", "vtexappkey-sandbox-HUB", TOKEN)]
    assert all(r.method == "GET" for r in sandbox.requests)  # a check never commits, configures or posts
    assert sandbox.erp_deliveries == []
    assert TOKEN not in out.getvalue() and "erp-secret-9931" not in out.getvalue()


def test_a_feed_vtex_does_not_know_yet_is_ok_and_says_the_admin_pushes_the_filter(sandbox):
    sandbox.feed_config = None  # VTEX answers 404
    out = io.StringIO()

    call_command(*_args(sandbox), stdout=out)

    assert "VTEX credentials: ok (feed not configured yet: the hub pushes the default filter when you save it " \
           "under Feed configs in the admin)" in out.getvalue()
    assert Store.objects.count() == 1


def test_a_wrong_token_is_refused_with_the_401_and_nothing_is_written(sandbox):
    printed, error = _refused(_args(sandbox, token="wrong-token-123"))

    assert ("VTEX credentials: REFUSED (HTTP 401) — check the app key and token, and that the appKey's role can "
            "read orders") in printed
    assert "nothing was saved: the VTEX credentials check failed" in error and "--no-check" in error
    assert Store.objects.count() == 0 and ErpConnection.objects.count() == 0
    assert "wrong-token-123" not in printed + error


def test_a_wrong_token_on_an_update_changes_nothing(store, sandbox):
    before = _snapshot()

    printed, _ = _refused(["connect_store", "acme", "--app-token", "wrong-token-123", "--erp-timeout", "7"])

    assert "REFUSED (HTTP 401)" in printed
    assert _snapshot() == before and Store.objects.get(name="acme").app_token == TOKEN


def test_an_update_is_checked_with_the_stored_token_when_none_is_given(store, sandbox):
    out = io.StringIO()

    call_command("connect_store", "acme", "--erp-timeout", "7", stdout=out)

    assert "VTEX credentials: ok (feed configured)" in out.getvalue()
    assert "updated (erp timeout_seconds)" in out.getvalue()
    assert [r.headers["x-vtex-api-apptoken"] for r in sandbox.requests] == [TOKEN]


def test_an_erp_url_on_a_closed_port_is_not_reachable_and_nothing_is_written(sandbox):
    erp_url = f"http://127.0.0.1:{_free_port()}/erp/orders"

    printed, error = _refused(_args(sandbox, erp_url=erp_url))

    assert "VTEX credentials: ok (feed configured)" in printed
    assert f"ERP: not reachable: connection refused ({erp_url}) — check --erp-url" in printed
    assert "nothing was saved: the ERP check failed" in error
    assert Store.objects.count() == 0 and ErpConnection.objects.count() == 0


def test_a_vtex_host_that_cannot_be_reached_is_named_and_nothing_is_written(sandbox):
    base_url = f"http://127.0.0.1:{_free_port()}"

    printed, error = _refused(_args(sandbox, base_url=base_url))

    assert f"VTEX: not reachable: connection refused ({base_url}) — check --account, --environment and " \
           "--base-url" in printed
    assert "ERP: reachable" in printed  # both are checked, so one run shows every problem
    assert "the VTEX check failed" in error
    assert Store.objects.count() == 0


def test_vtex_failing_for_a_moment_is_reported_but_does_not_block_the_save(sandbox):
    sandbox.fail_next("feed_config_get", 503)
    out = io.StringIO()

    call_command(*_args(sandbox), stdout=out)

    assert "VTEX credentials: not confirmed (HTTP 503: VTEX could not answer now); saving anyway" in out.getvalue()
    assert Store.objects.count() == 1


def test_no_check_saves_without_any_call(sandbox):
    # Neither VTEX nor the ERP could pass a check here: the save must still happen, and nothing be called.
    erp_url = f"http://127.0.0.1:{_free_port()}/erp/orders"
    out = io.StringIO()

    call_command(*_args(sandbox, token="not-the-sandbox-token", erp_url=erp_url), "--no-check", stdout=out)

    assert sandbox.requests == []
    assert [line for line in out.getvalue().splitlines() if line.startswith(("VTEX", "ERP"))] == []
    store = Store.objects.get(name="acme")
    assert (store.app_token, store.erp.url) == ("not-the-sandbox-token", erp_url)


def test_a_failed_check_exits_non_zero_with_one_clear_line_and_no_traceback(sandbox):
    result = _manage(*_args(sandbox, token="wrong-token-123"))

    assert result.returncode == 1
    assert "VTEX credentials: REFUSED (HTTP 401)" in result.stdout
    assert result.stderr.strip().splitlines() == [
        "CommandError: nothing was saved: the VTEX credentials check failed (see above). Fix it, or add "
        "--no-check to save without checking."]
    assert Store.objects.count() == 0
