"""The order hook endpoint, POST /hooks/vtex/<store>/: VTEX's notifications in, everything else refused and counted."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from core.models import Store
from core.stores import store_connect
from feeds.handles import handles_owed
from feeds.hook_config import hook_config_body, hook_config_load, hook_config_push
from feeds.hook_inbox import MAX_BODY_BYTES, hook_call_receive
from feeds.models import FeedConfig, FeedEvent, HookRejection
from orders.models import OrderSync
from tests.conftest import TOKEN
from tests.helpers import keys_by_order, run_sync, start_handling_204

SECRET = "hook-secret-Ka93-never-shown-0042"
EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "vtex" / "examples"
URL = "/hooks/vtex/{}/"


def _store(name: str = "shop", *, account: str = "shop", app_key: str = "vtexappkey-shop-HUB",
           hook_secret: str | None = SECRET, enabled: bool = True) -> Store:
    store = store_connect(name=name, account=account, app_key=app_key, app_token="app-token-1",
                          base_url="http://127.0.0.1:9", erp_url="http://127.0.0.1:9/erp",
                          hook_secret=hook_secret).store
    if not enabled:
        Store.objects.filter(pk=store.pk).update(enabled=False)
    return store


def _notification(**changes: object) -> dict:
    body = {"Domain": "Fulfillment", "OrderId": "v1001-01", "State": "ready-for-handling",
            "LastState": "window-to-cancel", "LastChange": "2026-03-01T10:00:00.1234567Z",
            "CurrentChange": "2026-03-01T10:05:00.7654321Z",
            "Origin": {"Account": "shop", "Key": "vtexappkey-shop-HUB"}}
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def _post(client: Client, body: object, *, store: str = "shop", token: str | None = SECRET, method: str = "POST"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {} if token is None else {"X-Hub-Hook-Token": token}
    return client.generic(method, URL.format(store), data, content_type="application/json", headers=headers)


def _rejections() -> dict[tuple[str | None, str], int]:
    return {(row.store.name if row.store else None, row.reason): row.count
            for row in HookRejection.objects.select_related("store")}


# --- VTEX's own payloads -----------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("example, state, outcome", [
    ("hook-notification-payload.json", "ready-for-handling", "queued"),
    ("hook-notification-payload-guide-variant.json", "payment-approved", "ignored"),  # no LastState/CurrentChange
])
def test_vtex_example_notifications_are_accepted_as_they_are(client, example, state, outcome):
    path = EXAMPLES / example
    if not path.exists():
        pytest.skip(f"VTEX's examples are not beside the repository ({EXAMPLES})")
    raw = path.read_bytes()
    payload = json.loads(raw)
    store = _store(account=payload["Origin"]["Account"], app_key=payload["Origin"]["Key"])

    response = _post(client, raw)

    assert response.status_code == 200, response.content
    assert response.json() == {"ok": True, "outcome": outcome}
    event = FeedEvent.objects.get()
    assert (event.store, event.source, event.order_id, event.state, event.outcome) == (
        store, "hook", payload["OrderId"], state, outcome)
    assert (event.handle, event.event_id, event.payload) == ("", "", payload)
    # The change time that pairs it with the feed's item: CurrentChange, or LastChange when VTEX leaves it out.
    expected = payload.get("CurrentChange", payload["LastChange"])
    assert event.current_change.isoformat().startswith(expected[:26].replace("Z", ""))
    assert OrderSync.objects.filter(order_id=payload["OrderId"]).exists() == (outcome == "queued")
    assert _rejections() == {}


@pytest.mark.django_db
def test_the_ping_answers_200_with_the_secret_and_stores_nothing(client):
    _store()

    pinged = _post(client, {"hookConfig": "ping"})
    unauthenticated = _post(client, {"hookConfig": "ping"}, token=None)

    assert pinged.status_code == 200 and pinged.json() == {"ok": True}
    assert unauthenticated.status_code == 401
    assert FeedEvent.objects.count() == 0
    assert _rejections() == {("shop", "no_token"): 1}


@pytest.mark.django_db
def test_it_needs_no_csrf_token_session_or_login(client):
    _store()
    strict = Client(enforce_csrf_checks=True)

    response = _post(strict, _notification())

    assert response.status_code == 200
    assert "sessionid" not in response.cookies and "csrftoken" not in response.cookies


# --- bad input: the right status, nothing stored, counted ----------------------------------------------

BAD = [
    # (what, request, status, reason)
    ("malformed JSON", dict(body=b'{"OrderId": "v1001-01",'), 400, "bad_json"),
    ("not UTF-8", dict(body=b'{"OrderId": "\xff"}'), 400, "bad_json"),
    ("NaN", dict(body=b'{"OrderId": NaN}'), 400, "bad_json"),
    ("a NUL character", dict(body=_notification(OrderId="v1001\u0000-01")), 400, "bad_json"),
    ("a JSON array", dict(body=[_notification()]), 400, "bad_shape"),
    ("no OrderId", dict(body=_notification(OrderId=None)), 400, "bad_shape"),
    ("an empty State", dict(body=_notification(State=" ")), 400, "bad_shape"),
    ("a number for State", dict(body=_notification(State=7)), 400, "bad_shape"),
    ("no LastChange", dict(body=_notification(LastChange=None)), 400, "bad_shape"),
    ("a time that is not a time", dict(body=_notification(CurrentChange="yesterday")), 400, "bad_shape"),
    ("no Origin", dict(body=_notification(Origin=None)), 400, "bad_shape"),
    ("an Origin without Key", dict(body=_notification(Origin={"Account": "shop"})), 400, "bad_shape"),
    ("an OrderId too long to store as is", dict(body=_notification(OrderId="v" * 101)), 400, "bad_shape"),
    ("the feed's camelCase item", dict(body={"orderId": "v1001-01", "state": "ready-for-handling",
                                            "lastChange": "2026-03-01T10:00:00Z", "domain": "Fulfillment"}),
     400, "bad_shape"),
    ("no secret", dict(token=None), 401, "no_token"),
    ("an empty secret", dict(token=""), 401, "no_token"),
    ("a wrong secret", dict(token="hook-secret-Ka93-never-shown-0043"), 401, "wrong_token"),
    ("the secret's prefix", dict(token=SECRET[:-1]), 401, "wrong_token"),
    ("the app token as secret", dict(token="app-token-1"), 401, "wrong_token"),
    ("another appKey", dict(body=_notification(Origin={"Account": "shop", "Key": "vtexappkey-other-X"})),
     403, "wrong_origin"),
    ("another account", dict(body=_notification(Origin={"Account": "other", "Key": "vtexappkey-shop-HUB"})),
     403, "wrong_origin"),
    ("GET", dict(method="GET"), 405, "method"),
    ("PUT", dict(method="PUT"), 405, "method"),
    ("a body over 64 KB", dict(body=_notification(Padding="x" * 65_536)), 413, "too_large"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("what, request_, status, reason", BAD, ids=[case[0] for case in BAD])
def test_bad_input_gets_its_status_stores_nothing_and_is_counted(client, what, request_, status, reason):
    _store()
    body = request_.get("body", _notification())

    response = _post(client, body, token=request_.get("token", SECRET), method=request_.get("method", "POST"))
    again = _post(client, body, token=request_.get("token", SECRET), method=request_.get("method", "POST"))

    assert (response.status_code, again.status_code) == (status, status), response.content
    assert FeedEvent.objects.count() == 0 and OrderSync.objects.count() == 0
    assert _rejections() == {("shop", reason): 2}
    assert "error" in response.json()
    if status == 405:
        assert response["Allow"] == "POST"


@pytest.mark.django_db
@pytest.mark.parametrize("store_name, reason", [("nobody", "unknown_store"), ("off", "disabled_store")])
def test_an_unknown_or_disabled_store_is_404(client, store_name, reason):
    _store()
    _store("off", enabled=False)

    response = _post(client, _notification(), store=store_name)

    assert response.status_code == 404
    assert FeedEvent.objects.count() == 0
    # An unknown name is the caller's text: counted without it.
    assert _rejections() == {(None if reason == "unknown_store" else "off", reason): 1}


@pytest.mark.django_db
def test_a_store_without_a_hook_secret_refuses_every_call(client):
    _store(hook_secret=None)

    for token in (None, "", "anything-at-all-long-enough"):
        assert _post(client, _notification(), token=token).status_code == 401

    assert FeedEvent.objects.count() == 0
    assert _rejections() == {("shop", "no_secret"): 3}


@pytest.mark.django_db
def test_a_body_of_exactly_64_kb_is_read_and_one_byte_more_is_refused(client):
    _store()
    base = json.dumps(_notification(Padding="")).encode()
    exact = json.dumps(_notification(Padding="x" * (65_536 - len(base)))).encode()
    assert len(exact) == 65_536

    assert _post(client, exact).status_code == 200
    assert _post(client, exact[:-1] + b' }').status_code == 413  # 65,537 bytes


@pytest.mark.django_db
def test_it_never_reads_more_than_the_limit_whatever_content_length_says():
    _store()
    asked: list[int] = []

    def read(size: int) -> bytes:
        asked.append(size)
        return b" " * size  # a sender that would go on for ever

    answer = hook_call_receive(store_name="shop", method="POST", token=SECRET, content_length=None, read=read)

    assert (answer.status, answer.reason) == (413, "too_large")
    assert asked == [MAX_BODY_BYTES + 1]


@pytest.mark.django_db
def test_the_account_is_compared_without_case_and_the_change_times_as_vtex_wrote_them(client):
    _store(account="Shop-BR")

    response = _post(client, _notification(Origin={"Account": "shop-br", "Key": "vtexappkey-shop-HUB"}))

    assert response.status_code == 200
    event = FeedEvent.objects.get()
    assert event.last_state == "window-to-cancel" and event.domain == "Fulfillment"
    assert event.current_change.isoformat() == "2026-03-01T10:05:00.765432+00:00"
    assert event.last_change.isoformat() == "2026-03-01T10:00:00.123456+00:00"


@pytest.mark.django_db
def test_a_repeated_notification_is_stored_as_a_duplicate_and_queues_nothing_more(client):
    _store()

    first = _post(client, _notification())
    second = _post(client, _notification())

    assert (first.json()["outcome"], second.json()["outcome"]) == ("queued", "duplicate")
    original, repeat = FeedEvent.objects.order_by("pk")
    assert repeat.duplicate_of == original and OrderSync.objects.count() == 1


@pytest.mark.django_db
def test_hook_events_are_never_owed_to_vtex(client):
    _store()

    assert _post(client, _notification()).status_code == 200

    assert FeedEvent.objects.get().committed_at is None  # nothing to commit: no handle
    assert handles_owed() == 0


@pytest.mark.django_db
def test_the_secret_is_in_no_answer_and_no_log(client, caplog):
    _store()
    caplog.set_level(logging.DEBUG)
    responses = [_post(client, _notification()), _post(client, {"hookConfig": "ping"}),
                 _post(client, _notification(), token=SECRET + "x"), _post(client, b"{", token=SECRET),
                 _post(client, _notification(), method="GET")]

    seen = caplog.text + "".join(str(r.headers) + r.content.decode() for r in responses)
    assert "hook call to shop refused (401): wrong_token" in caplog.text
    assert SECRET not in seen and "app-token-1" not in seen
    raw = Store.objects.values_list("hook_secret", flat=True).get()  # the model field decrypts it
    with connection.cursor() as cursor:
        cursor.execute("SELECT hook_secret FROM feeds_store")
        [(stored,)] = cursor.fetchall()
    assert raw == SECRET and stored.startswith("fernet:") and SECRET not in stored


# --- one stream: the hook, then the feed, processed once ----------------------------------------------

def _hooked(sandbox, item: dict) -> dict:
    """VTEX's notification for the same change as a feed item (the sandbox sets both change times)."""
    return {"Domain": item["domain"], "OrderId": item["orderId"], "State": item["state"],
            "LastState": item["lastState"], "LastChange": item["lastChange"], "CurrentChange": item["currentChange"],
            "Origin": {"Account": sandbox.account, "Key": sandbox.app_key}}


@pytest.fixture
def hooked_store(store):
    return store_connect(name=store.name, hook_secret=SECRET).store


def test_a_hook_event_then_the_same_event_from_the_feed_is_processed_once(sandbox, hooked_store):
    order_id = sandbox.create_order(status="payment-approved")
    item = sandbox.set_status(order_id, "ready-for-handling")
    assert item["currentChange"] != item["lastChange"]

    response = _post(Client(), _hooked(sandbox, item), store="acme")
    run_sync()

    assert response.json() == {"ok": True, "outcome": "queued"}
    hook, feed = FeedEvent.objects.filter(order_id=order_id, state="ready-for-handling").order_by("pk")
    assert (hook.source, hook.outcome, hook.duplicate_of) == ("hook", "queued", None)
    assert (feed.source, feed.outcome, feed.duplicate_of) == ("feed", "duplicate", hook)
    assert feed.committed_at is not None and sandbox.queue_size() == 0  # the feed's copy was still committed
    assert {key: len(keys) for key, keys in keys_by_order(sandbox).items()} == {order_id: 1}
    assert len([d for d in sandbox.erp_deliveries if d.order_id == order_id]) == 1
    assert start_handling_204(sandbox) == {order_id: 1}


def test_a_feed_event_then_the_same_event_from_the_hook_is_a_duplicate(sandbox, hooked_store):
    order_id = sandbox.create_order(status="payment-approved")
    item = sandbox.set_status(order_id, "ready-for-handling")
    run_sync()

    response = _post(Client(), _hooked(sandbox, item), store="acme")
    run_sync()

    assert response.json() == {"ok": True, "outcome": "duplicate"}
    assert len([d for d in sandbox.erp_deliveries if d.order_id == order_id]) == 1
    assert start_handling_204(sandbox) == {order_id: 1}


# --- the hook secret in connect_store ---------------------------------------------------------------

def _connect(sandbox, *extra: str, stdin: str | None = None) -> str:
    out = io.StringIO()
    kwargs = {"stdin": io.StringIO(stdin)} if stdin is not None else {}
    call_command("connect_store", "acme", "--account", "sandbox", "--app-key", "vtexappkey-sandbox-HUB",
                 "--app-token", TOKEN, "--base-url", sandbox.url, "--erp-url", sandbox.erp_url, *extra,
                 stdout=out, **kwargs)
    return out.getvalue()


def _secret() -> str:
    return Store.objects.get(name="acme").hook_secret


@pytest.mark.django_db(transaction=True)
def test_connect_store_reads_the_hook_secret_from_the_environment_only_when_asked(sandbox, monkeypatch):
    monkeypatch.setenv("HUB_HOOK_SECRET", SECRET)
    monkeypatch.setenv("OTHER_HOOK_SECRET", SECRET + "-2")

    without = _connect(sandbox)
    assert _secret() == "" and "hook secret not set" in without
    printed = _connect(sandbox, "--hook-secret-env")
    assert _secret() == SECRET
    renamed = _connect(sandbox, "--hook-secret-env", "OTHER_HOOK_SECRET")
    assert _secret() == SECRET + "-2"
    kept = _connect(sandbox)

    assert "updated (hook_secret)" in printed and "hook secret set (hidden)" in printed
    assert "updated (hook_secret)" in renamed and "unchanged" in kept and _secret() == SECRET + "-2"
    assert SECRET not in printed + renamed + kept
    monkeypatch.delenv("HUB_HOOK_SECRET")
    with pytest.raises(CommandError, match="HUB_HOOK_SECRET is not set"):
        _connect(sandbox, "--hook-secret-env")


@pytest.mark.django_db(transaction=True)
def test_connect_store_takes_the_hook_secret_from_stdin_or_the_command_line(sandbox):
    _connect(sandbox, "--hook-secret-stdin", stdin=SECRET + "\n")
    assert _secret() == SECRET
    _connect(sandbox, "--hook-secret", SECRET + "-cli")
    assert _secret() == SECRET + "-cli"


@pytest.mark.django_db(transaction=True)
def test_connect_store_refuses_two_secrets_from_stdin_and_a_short_secret(sandbox):
    with pytest.raises(CommandError, match="only one secret can come from standard input"):
        call_command("connect_store", "acme", "--account", "sandbox", "--app-key", "k", "--app-token-stdin",
                     "--hook-secret-stdin", "--erp-url", sandbox.erp_url, stdin=io.StringIO("a\nb\n"))
    with pytest.raises(CommandError, match="hook secret must be at least 16 characters"):
        _connect(sandbox, "--hook-secret", "short-secret")
    with pytest.raises(CommandError):  # one source at a time
        _connect(sandbox, "--hook-secret", SECRET, "--generate-hook-secret")
    assert Store.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_connect_store_generates_a_hook_secret_and_never_prints_it(sandbox):
    first = _connect(sandbox, "--generate-hook-secret")
    generated = _secret()
    second = _connect(sandbox, "--generate-hook-secret")

    assert len(generated) >= 40 and _secret() != generated
    assert "hook secret generated (stored encrypted)" in first and "hook_config push acme" in first
    assert generated not in first and _secret() not in second


# --- the hook configuration the hub pushes -------------------------------------------------------------

@pytest.fixture
def public_hub(live_server, settings, hooked_store):
    settings.HUB_PUBLIC_URL = live_server.url
    return live_server


def test_hook_config_push_stores_the_config_after_vtex_pinged_the_hub(sandbox, hooked_store, public_hub):
    out = io.StringIO()

    call_command("hook_config", "push", "acme", stdout=out)

    url = f"{public_hub.url}/hooks/vtex/acme/"
    assert f"VTEX accepted the hook (HTTP 200): it calls {url}" in out.getvalue()
    config = sandbox.hook_config
    assert config["hook"] == {"url": url, "headers": {"X-Hub-Hook-Token": SECRET}}
    assert config["filter"]["type"] == "FromWorkflow"
    assert set(config["filter"]["status"]) == set(FeedConfig.objects.get(store=hooked_store).statuses)
    assert _rejections() == {} and FeedEvent.objects.count() == 0  # the ping passed and stored nothing
    pushed = [r for r in sandbox.requests if r.path == "/api/orders/hook/config" and r.method == "POST"]
    assert json.loads(pushed[0].body) == hook_config_body(hooked_store)
    assert SECRET not in out.getvalue()


def test_hook_config_show_compares_with_vtex_and_delete_removes_it(sandbox, hooked_store, public_hub):
    assert hook_config_push(store=hooked_store, by="test").ok
    shown = io.StringIO()
    call_command("hook_config", "show", "acme", stdout=shown)
    FeedConfig.objects.filter(store=hooked_store).update(statuses=["ready-for-handling"])
    drifted = hook_config_load(store=hooked_store)
    store_connect(name="acme", hook_secret=SECRET + "-new")
    stale = hook_config_load(store=Store.objects.get(name="acme"))

    call_command("hook_config", "delete", "acme", stdout=io.StringIO())

    assert "VTEX's hook matches the hub's." in shown.getvalue() and SECRET not in shown.getvalue()
    assert '"X-Hub-Hook-Token": "(hidden)"' in shown.getvalue()
    assert [item.label for item in drifted.drift] == ["Statuses"]
    assert ("X-Hub-Hook-Token", "another value") in [(item.label, item.vtex) for item in stale.drift]
    assert sandbox.hook_config is None


def test_a_push_vtex_cannot_ping_is_refused_and_says_where_to_look(sandbox, hooked_store, settings):
    settings.HUB_PUBLIC_URL = sandbox.url  # nothing answers /hooks/vtex/ there

    result = hook_config_push(store=hooked_store, by="test")

    assert not result.ok and result.status == 400 and "HUB_PUBLIC_URL" in result.message
    assert sandbox.hook_config is None and SECRET not in result.message


@pytest.mark.parametrize("public_url, message", [
    ("", "HUB_PUBLIC_URL is not set"),
    ("http://hub.example.com", "HUB_PUBLIC_URL must be https"),
    ("not a url", "is not an http(s) URL"),
])
def test_no_usable_public_url_means_nothing_is_sent(sandbox, hooked_store, settings, public_url, message):
    settings.HUB_PUBLIC_URL = public_url

    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("hook_config", "push", "acme", stdout=io.StringIO())

    assert not [r for r in sandbox.requests if r.path == "/api/orders/hook/config"]


def test_a_store_without_a_hook_secret_pushes_nothing(sandbox, store, settings):
    settings.HUB_PUBLIC_URL = "https://hub.example.com"

    result = hook_config_push(store=store, by="test")

    assert not result.ok and "has no hook secret" in result.message and "--generate-hook-secret" in result.message
    assert sandbox.requests == []


# --- the store's admin form ---------------------------------------------------------------------------

def _form(store: Store, **changes: str) -> dict:
    erp = store.erp
    data = {"name": store.name, "account": store.account, "environment": store.environment,
            "base_url": store.base_url, "app_key": store.app_key, "app_token": "", "hook_secret": "", "enabled": "on",
            "erp-TOTAL_FORMS": "1", "erp-INITIAL_FORMS": "1", "erp-MIN_NUM_FORMS": "0", "erp-MAX_NUM_FORMS": "1",
            "erp-0-id": str(erp.pk), "erp-0-store": str(store.pk), "erp-0-url": erp.url,
            "erp-0-timeout_seconds": str(erp.timeout_seconds), "erp-0-connector": erp.connector,
            "erp-0-new_headers": "", "_save": "Save"}
    return data | changes


@pytest.mark.django_db
def test_the_admin_takes_a_hook_secret_write_only(admin_client):
    store = _store()
    url = f"/admin/core/store/{store.pk}/change/"

    page = admin_client.get(url).content.decode()
    kept = admin_client.post(url, _form(store))
    assert Store.objects.get().hook_secret == SECRET
    short = admin_client.post(url, _form(store, hook_secret="too-short"))
    assert Store.objects.get().hook_secret == SECRET
    replaced = admin_client.post(url, _form(store, hook_secret=SECRET + "-new"))

    assert 'type="password" name="hook_secret"' in page and "A secret is set" in page and SECRET not in page
    assert kept.status_code == 302 and replaced.status_code == 302
    assert short.status_code == 200 and "hook secret must be at least 16 characters" in short.content.decode()
    assert Store.objects.get().hook_secret == SECRET + "-new"


@pytest.mark.django_db
def test_check_and_rotate_secrets_cover_the_hook_secret(settings):
    from cryptography.fernet import Fernet

    from core.stores import secrets_check, secrets_rotate

    _store()
    _store("nohook", hook_secret=None)  # stored as "": nothing to decrypt or rotate
    old_key, new_key = settings.HUB_ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    assert secrets_check().checked == 5  # two app tokens, two ERP header sets, one hook secret
    settings.HUB_ENCRYPTION_KEYS = [new_key, old_key]
    assert secrets_check().stale == 5

    assert secrets_rotate() == 5
    settings.HUB_ENCRYPTION_KEYS = [new_key]
    assert secrets_check().problems == [] and Store.objects.get(name="shop").hook_secret == SECRET
    settings.HUB_ENCRYPTION_KEYS = [old_key]
    problems = secrets_check().problems
    assert len(problems) == 5 and any(p.startswith("store shop: its hook secret cannot be decrypted") for p in problems)
