"""The store admin: run-now buttons (POST, core.run_jobs), write-only secrets, pages per staff group."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils.deprecation import RemovedInDjango60Warning

from core.models import ErpConnection, Store
from feeds.models import FeedConfig
from orders.models import OrderSync
from tests.conftest import TOKEN
from tests.helpers import states

pytestmark = pytest.mark.django_db(transaction=True)

ERP_SECRET = "erp-secret-9931"
CLIENTS = {"viewer": "viewer_client", "operator": "operator_client", "administrator": "admin_client_hub"}


def run_url(store: Store, kind: str) -> str:
    return reverse("admin:core_store_run", args=[store.pk, kind])


def change_url(store: Store) -> str:
    return reverse("admin:core_store_change", args=[store.pk])


def feed_reads(sandbox) -> list:
    return [r for r in sandbox.requests if r.method == "GET" and r.path == "/api/orders/feed"]


def test_run_now_pulls_then_dispatches_the_store(operator_client, sandbox, store):
    order_ids = sandbox.create_orders(2)
    back_to = reverse("admin:core_store_changelist") + "?enabled__exact=1"

    pulled = operator_client.post(run_url(store, "pull"), {"next": back_to})

    assert pulled.status_code == 302 and pulled["Location"] == back_to
    assert feed_reads(sandbox)
    assert states() == {order_id: "new" for order_id in order_ids}  # stored by the pull (Q_CLUSTER sync: inline)

    dispatched = operator_client.post(run_url(store, "dispatch"), {"next": back_to}, follow=True)

    assert states() == {order_id: "handling_started" for order_id in order_ids}
    assert {d.order_id for d in sandbox.erp_deliveries} == set(order_ids)
    shown = [str(m) for m in dispatched.context["messages"]]
    assert "Dispatch of acme queued." in shown
    steps = OrderSync.objects.get(order_id=order_ids[0]).attempts_log.values_list("triggered_by", flat=True)
    assert "otto-operator" in steps  # the dispatch says who asked for it


def test_run_now_says_the_pull_was_queued_and_goes_back_to_the_store_by_default(admin_client_hub, sandbox, store):
    response = admin_client_hub.post(run_url(store, "pull"), follow=True)

    assert response.redirect_chain == [(change_url(store), 302)]
    assert "Pull of acme queued." in [str(m) for m in response.context["messages"]]


@pytest.mark.parametrize("unsafe", ["https://evil.example/steal", "//evil.example/", "javascript:alert(1)"])
def test_run_now_never_redirects_off_site(operator_client, sandbox, store, unsafe):
    response = operator_client.post(run_url(store, "pull"), {"next": unsafe})

    assert response.status_code == 302 and response["Location"] == change_url(store)


def test_run_now_is_post_only(operator_client, sandbox, store):
    response = operator_client.get(run_url(store, "pull"))

    assert response.status_code == 405
    assert feed_reads(sandbox) == []


def test_run_now_needs_the_run_jobs_permission(viewer_client, sandbox, store):
    sandbox.create_orders(1)

    for kind in ("pull", "dispatch"):
        assert viewer_client.post(run_url(store, kind)).status_code == 403
    assert feed_reads(sandbox) == [] and OrderSync.objects.count() == 0


def test_run_now_refuses_an_unknown_job_or_store(operator_client, sandbox, store):
    assert operator_client.post(run_url(store, "delete-everything")).status_code == 404
    assert operator_client.post(reverse("admin:core_store_run", args=[store.pk + 999, "pull"])).status_code == 404


def test_the_run_buttons_show_only_for_staff_who_may_run_jobs(viewer_client, operator_client, admin_client_hub, store):
    for client, shown in ((viewer_client, False), (operator_client, True), (admin_client_hub, True)):
        page = client.get(change_url(store)).content.decode()
        assert (run_url(store, "pull") in page) is shown
        assert (run_url(store, "dispatch") in page) is shown


def test_the_store_page_links_to_its_feed_configuration(viewer_client, store):
    config = FeedConfig.objects.get(store=store)

    page = viewer_client.get(change_url(store)).content.decode()

    assert reverse("admin:feeds_feedconfig_change", args=[config.pk]) in page


@pytest.mark.parametrize("who", list(CLIENTS))
def test_secrets_never_appear_in_any_store_or_feed_page(request, store, who):
    client = request.getfixturevalue(CLIENTS[who])
    config = FeedConfig.objects.get(store=store)
    pages = [reverse("admin:core_store_changelist"), reverse("admin:core_store_changelist") + "?q=acme",
             change_url(store), reverse("admin:core_store_add"),
             reverse("admin:feeds_feedconfig_change", args=[config.pk]), reverse("admin:feeds_feedconfig_changelist"),
             reverse("admin:core_store_history", args=[store.pk])]
    for url in pages:
        response = client.get(url)
        assert TOKEN.encode() not in response.content, url
        assert ERP_SECRET.encode() not in response.content, url
        assert b"fernet:" not in response.content, url  # nor the ciphertext


def test_the_change_page_shows_header_names_and_whether_a_token_is_set(viewer_client, admin_client_hub, store):
    for client in (viewer_client, admin_client_hub):
        page = client.get(change_url(store)).content.decode()
        assert "Authorization" in page  # the header's name only
        assert ERP_SECRET not in page and TOKEN not in page
    admin_page = admin_client_hub.get(change_url(store)).content.decode()
    assert 'type="password" name="app_token"' in admin_page and 'value="' + TOKEN not in admin_page


def store_form(store: Store, **overrides) -> dict:
    erp = ErpConnection.objects.get(store=store)
    data = {
        "name": store.name, "account": store.account, "environment": store.environment, "base_url": store.base_url,
        "app_key": store.app_key, "app_token": "", "enabled": "on",
        "erp-TOTAL_FORMS": "1", "erp-INITIAL_FORMS": "1", "erp-MIN_NUM_FORMS": "0", "erp-MAX_NUM_FORMS": "1",
        "erp-0-id": str(erp.pk), "erp-0-store": str(store.pk), "erp-0-url": erp.url,
        "erp-0-timeout_seconds": str(erp.timeout_seconds), "erp-0-connector": erp.connector, "erp-0-new_headers": "",
        "_save": "Save",
    }
    data.update(overrides)
    return data


def test_saving_the_store_with_an_empty_token_keeps_the_token_and_headers(admin_client_hub, store):
    response = admin_client_hub.post(change_url(store), store_form(store, account="renamed"))

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    saved = Store.objects.get(pk=store.pk)
    assert saved.account == "renamed" and saved.app_token == TOKEN
    assert ErpConnection.objects.get(store=store).headers == {"Authorization": f"Bearer {ERP_SECRET}"}


def test_a_new_token_and_new_headers_replace_the_old_ones(admin_client_hub, store):
    response = admin_client_hub.post(change_url(store), store_form(
        store, app_token="new-token-77", **{"erp-0-new_headers": "X-Api-Key: k-123"}))

    assert response.status_code == 302
    assert Store.objects.get(pk=store.pk).app_token == "new-token-77"
    assert ErpConnection.objects.get(store=store).headers == {"X-Api-Key": "k-123"}
    page = admin_client_hub.get(change_url(store)).content.decode()
    assert "new-token-77" not in page and "k-123" not in page and "X-Api-Key" in page


def test_viewer_and_operator_cannot_change_a_store(viewer_client, operator_client, store):
    for client in (viewer_client, operator_client):
        assert client.post(change_url(store), store_form(store, app_token="stolen")).status_code == 403
    assert Store.objects.get(pk=store.pk).app_token == TOKEN


def test_store_forms_raise_no_url_scheme_deprecation_warning(admin_client_hub, store, recwarn):
    admin_client_hub.get(reverse("admin:core_store_add"))
    admin_client_hub.get(change_url(store))

    assert not [w for w in recwarn if issubclass(w.category, RemovedInDjango60Warning)]


@pytest.mark.parametrize("who, change_page, add_page", [
    ("viewer", 200, 403),
    ("operator", 200, 403),
    ("administrator", 200, 200),
])
def test_every_store_page_answers_each_group_as_its_permissions_say(request, store, who, change_page, add_page):
    client = request.getfixturevalue(CLIENTS[who])
    pages = {
        reverse("admin:core_store_changelist"): 200,
        change_url(store): change_page,
        reverse("admin:core_store_add"): add_page,
        reverse("admin:core_store_history", args=[store.pk]): 200,
        reverse("admin:core_store_delete", args=[store.pk]): 200 if who == "administrator" else 403,
    }
    for url, expected in pages.items():
        assert client.get(url).status_code == expected, url
