"""The order hook from the feed config's admin: push (VTEX pings the hub), load with drift, delete, who may."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from core.models import Store
from core.stores import store_connect
from feeds.hook_config import hook_config_body
from feeds.models import FeedConfig
from tests.conftest import TOKEN

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "hook-secret-Ka93-never-shown-0042"
HOOK_PATH = "/api/orders/hook/config"


def url(name: str, config: FeedConfig, *args: str) -> str:
    return reverse(f"admin:feeds_feedconfig_{name}", args=[config.pk, *args])


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def hook_calls(sandbox) -> list:
    return [r for r in sandbox.requests if r.path == HOOK_PATH]


@pytest.fixture
def config(store) -> FeedConfig:
    store_connect(name=store.name, hook_secret=SECRET)
    return FeedConfig.objects.select_related("store").get(store=store)


@pytest.fixture
def public_hub(live_server, settings):
    """VTEX (the sandbox) pings HUB_PUBLIC_URL/hooks/vtex/<store>/ while it saves: a real server must answer."""
    settings.HUB_PUBLIC_URL = live_server.url
    return live_server


def test_the_hook_page_says_what_the_hub_would_push_and_never_shows_the_secret(admin_client_hub, config,
                                                                            settings):
    settings.HUB_PUBLIC_URL = "https://hub.example.com"

    page = admin_client_hub.get(url("hook", config)).content.decode()
    settings.HUB_PUBLIC_URL = ""
    unset = admin_client_hub.get(url("hook", config)).content.decode()

    assert "set (hidden)" in page and SECRET not in page and TOKEN not in page
    assert "https://hub.example.com/hooks/vtex/acme/" in page
    assert 'value="Push hook to VTEX"' in page and 'value="Load hook from VTEX"' in page
    assert "HUB_PUBLIC_URL is not set" in unset
    change_page = admin_client_hub.get(url("change", config)).content.decode()
    assert url("hook", config) in change_page and "not used (never pushed by the hub)" in change_page


def test_pushing_from_the_admin_reaches_vtex_after_its_ping_and_shows_its_answer(admin_client_hub, sandbox, config,
                                                                              public_hub):
    response = admin_client_hub.post(url("hook_push", config), follow=True)

    hook_url = f"{public_hub.url}/hooks/vtex/acme/"
    assert response.redirect_chain[-1][0] == url("hook", config)
    assert [m for m in messages_of(response) if m.startswith("Hook pushed to VTEX. VTEX accepted the hook (HTTP 200)")]
    assert sandbox.hook_config["hook"] == {"url": hook_url, "headers": {"X-Hub-Hook-Token": SECRET}}
    [pushed] = [r for r in hook_calls(sandbox) if r.method == "POST"]
    assert json.loads(pushed.body) == hook_config_body(config.store)
    saved = FeedConfig.objects.get(pk=config.pk)
    assert saved.hook_pushed_at is not None and saved.hook_present is True
    page = response.content.decode()
    assert "yes, checked" in page and SECRET not in page


def test_a_push_vtex_cannot_ping_shows_the_refusal_masked(sandbox, config, settings, viewer):
    settings.HUB_PUBLIC_URL = sandbox.url  # nothing answers /hooks/vtex/ there: VTEX's ping fails
    # A Viewer (the fixture also recreates the permissions a transactional test flushed) who may edit feed configs
    # but not see personal data.
    viewer.user_permissions.add(Permission.objects.get(content_type__app_label="feeds", codename="change_feedconfig"))
    client = Client()
    client.force_login(viewer)
    sandbox.fail_next("hook_config_set", 400,
                      body='{"error": {"code": "400", "message": "ping failed, ask ana.silva@example.com"}}')

    refused = client.post(url("hook_push", config), follow=True)
    pinged = client.post(url("hook_push", config), follow=True)

    [message] = messages_of(refused)
    assert message.startswith("VTEX did NOT take the hook. VTEX refused it (HTTP 400)") and "HUB_PUBLIC_URL" in message
    assert "ana.silva@example.com" not in message and "•••" in message
    assert "could not reach the hub" in messages_of(pinged)[0]
    assert sandbox.hook_config is None and FeedConfig.objects.get(pk=config.pk).hook_pushed_at is None


def test_loading_shows_vtex_copy_and_highlights_what_drifted(admin_client_hub, sandbox, config, public_hub):
    admin_client_hub.post(url("hook_push", config))
    same = admin_client_hub.post(url("hook_load", config)).content.decode()
    sandbox.hook_config = {"filter": {"type": "FromWorkflow", "status": ["invoiced"]},
                           "hook": {"url": "https://elsewhere.example.com/hook",
                                    "headers": {"X-Hub-Hook-Token": "someone-elses-token-77"}}}

    response = admin_client_hub.post(url("hook_load", config))

    assert "VTEX&#x27;s hook matches the hub&#x27;s." in same
    page = response.content.decode()
    assert response.status_code == 200
    assert "VTEX&#x27;s hook differs from the hub&#x27;s in: Statuses, URL, X-Hub-Hook-Token." in page
    assert {d["label"]: (d["hub"], d["vtex"]) for d in response.context["drift_rows"]} == {
        "Statuses": ("cancel, canceled, handling, invoiced, ready-for-handling", "invoiced"),
        "URL": (f"{public_hub.url}/hooks/vtex/acme/", "https://elsewhere.example.com/hook"),
        "X-Hub-Hook-Token": ("the store's hook secret", "another value"),
    }
    assert 'class="drift" data-drift="Statuses"' in page
    assert response.context["vtex_json"].count('"X-Hub-Hook-Token": "(hidden)"') == 1
    assert SECRET not in page and "someone-elses-token-77" not in page
    assert [r.method for r in hook_calls(sandbox)] == ["POST", "GET", "GET"]  # loading pushed nothing


def test_loading_a_hook_vtex_no_longer_has_marks_it_missing(admin_client_hub, sandbox, config, public_hub):
    admin_client_hub.post(url("hook_push", config))
    sandbox.hook_config = None  # VTEX removed it (3 days without notifications)

    page = admin_client_hub.post(url("hook_load", config)).content.decode()

    assert "VTEX has no hook for this appKey (HTTP 404)" in page
    saved = FeedConfig.objects.get(pk=config.pk)
    assert saved.hook_present is False and "hook missing on VTEX" in saved.vtex_log.splitlines()[0]


def test_deleting_asks_first_then_removes_the_hook_from_vtex(admin_client_hub, sandbox, config, public_hub):
    admin_client_hub.post(url("hook_push", config))

    asked = admin_client_hub.get(url("hook_delete", config))
    assert asked.status_code == 200 and "Yes, delete the hook on VTEX" in asked.content.decode()
    assert sandbox.hook_config is not None and not [r for r in hook_calls(sandbox) if r.method == "DELETE"]
    deleted = admin_client_hub.post(url("hook_delete", config), follow=True)

    assert sandbox.hook_config is None
    assert "VTEX deleted the hook (HTTP 200)" in messages_of(deleted)[0] or "HTTP 204" in messages_of(deleted)[0]
    saved = FeedConfig.objects.get(pk=config.pk)
    assert (saved.hook_pushed_at, saved.hook_present) == (None, None)  # no longer watched nor re-applied
    assert "hook deleted on VTEX by ada-admin" in saved.vtex_log


def test_saving_the_feed_config_pushes_the_hook_too_once_the_hub_keeps_one(admin_client_hub, sandbox, config,
                                                                         public_hub):
    form = {"filter_type": "FromWorkflow", "statuses": ["ready-for-handling", "canceled"], "expression": "",
            "visibility_timeout_seconds": "300", "retention_seconds": "604800", "_save": "Save"}
    admin_client_hub.post(url("change", config), form)
    assert not hook_calls(sandbox)  # no hook kept yet: the feed alone
    admin_client_hub.post(url("hook_push", config))

    saved = admin_client_hub.post(url("change", config), form | {"statuses": ["ready-for-handling", "invoiced"]},
                                  follow=True)

    assert set(sandbox.feed_config["filter"]["status"]) == {"ready-for-handling", "invoiced"}
    assert set(sandbox.hook_config["filter"]["status"]) == {"ready-for-handling", "invoiced"}
    assert [m for m in messages_of(saved) if m.startswith("Order hook pushed with the same filter.")]


@pytest.mark.parametrize("who", ["viewer_client", "operator_client"])
def test_viewers_and_operators_are_refused_and_nothing_reaches_vtex(request, who, sandbox, config, settings):
    settings.HUB_PUBLIC_URL = "https://hub.example.com"
    client = request.getfixturevalue(who)
    Store.objects.filter(pk=config.store_id).update(feed_status=Store.FeedStatus.NOT_CONFIGURED)
    before = len(sandbox.requests)

    page = client.get(url("hook", config))
    refused = [client.post(url("hook_push", config)), client.post(url("hook_load", config)),
               client.get(url("hook_delete", config)), client.post(url("hook_delete", config)),
               client.post(url("reapply", config, "feed"), {"next": "/admin/"}),
               client.post(url("reapply", config, "hook"), {"next": "/admin/"})]

    assert page.status_code == 200 and 'value="Push hook to VTEX"' not in page.content.decode()
    assert [r.status_code for r in refused] == [403] * 6
    assert sandbox.requests[before:] == []
    assert FeedConfig.objects.get(pk=config.pk).vtex_log == ""
