"""The feed configuration form: validated, pushed to the sandbox VTEX, loaded back with drift, tested on orders."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client
from django.urls import reverse

from feeds import expressions
from feeds.expressions import WALL_SECONDS
from feeds.feed_config import feed_config_body, feed_config_load, jsonata_check, jsonata_test
from feeds.models import FeedConfig
from orders.models import OrderSync
from tests.conftest import TOKEN
from tests.helpers import run_sync

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG_PATH = "/api/orders/feed/config"
BACKTRACKING = '$match("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", /(a+)+$/)'  # 25 s in the web process before


def change_url(config: FeedConfig) -> str:
    return reverse("admin:feeds_feedconfig_change", args=[config.pk])


def load_url(config: FeedConfig) -> str:
    return reverse("admin:feeds_feedconfig_load", args=[config.pk])


def expression_url(config: FeedConfig) -> str:
    return reverse("admin:feeds_feedconfig_test_expression", args=[config.pk])


def form_data(**overrides) -> dict:
    data = {"filter_type": "FromWorkflow", "statuses": ["ready-for-handling", "cancel"], "expression": "",
            "visibility_timeout_seconds": "300", "retention_seconds": "604800", "_save": "Save"}
    data.update(overrides)
    if not data.get("disable_single_fire"):
        data.pop("disable_single_fire", None)  # an unchecked checkbox is not posted
    return data


def config_posts(sandbox) -> list:
    return [r for r in sandbox.requests if r.method == "POST" and r.path == CONFIG_PATH]


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.fixture
def config(store) -> FeedConfig:
    return FeedConfig.objects.get(store=store)


def test_a_misspelled_status_is_refused_and_nothing_is_pushed(admin_client_hub, sandbox, config):
    before = sandbox.feed_config

    response = admin_client_hub.post(change_url(config),
                                     form_data(statuses=["ready-for-handling", "cancelation-request"]))

    assert response.status_code == 200  # the form again, with the error
    errors = response.context["adminform"].form.errors["statuses"]
    assert "Not an OMS status" in errors[0] and "cancelation-request" in errors[0]
    assert "cancellation-requested" in errors[0]  # the status it probably meant
    assert "never fire" in response.content.decode()
    assert config_posts(sandbox) == []
    assert sandbox.feed_config == before
    assert FeedConfig.objects.get(pk=config.pk).statuses == config.statuses


def test_a_valid_from_workflow_save_reaches_vtex_and_the_page_shows_its_answer(admin_client_hub, sandbox, config):
    response = admin_client_hub.post(change_url(config),
                                     form_data(statuses=["ready-for-handling", "cancellation-requested", "canceled"]),
                                     follow=True)

    assert response.status_code == 200
    assert sandbox.feed_config == {
        "filter": {"type": "FromWorkflow", "status": ["ready-for-handling", "cancellation-requested", "canceled"]},
        "queue": {"visibilityTimeoutInSeconds": 300, "MessageRetentionPeriodInSeconds": 604800},
    }
    body = json.loads(config_posts(sandbox)[0].body)
    assert set(body["filter"]) == {"type", "status"}  # never expression/disableSingleFire with FromWorkflow
    assert any("Pushed to VTEX" in m and "HTTP 200" in m for m in messages_of(response))
    assert b"HTTP 200" in response.content
    saved = FeedConfig.objects.get(pk=config.pk)
    assert saved.statuses == ["ready-for-handling", "cancellation-requested", "canceled"]
    assert saved.pushed_at is not None and saved.push_accepted and saved.vtex_answer.startswith("VTEX accepted it: HTTP 200")


def test_from_workflow_needs_at_least_one_status(admin_client_hub, sandbox, config):
    response = admin_client_hub.post(change_url(config), form_data(statuses=[]))

    assert response.status_code == 200
    assert "at least one status" in response.context["adminform"].form.errors["statuses"][0]
    assert config_posts(sandbox) == []


def test_from_orders_with_a_broken_expression_is_refused(admin_client_hub, sandbox, config):
    response = admin_client_hub.post(change_url(config), form_data(filter_type="FromOrders",
                                                                   expression='status = "ready-for-handling" and'))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["expression"][0].startswith("Invalid JSONata")
    assert config_posts(sandbox) == []
    assert FeedConfig.objects.get(pk=config.pk).filter_type == "FromWorkflow"


def test_from_orders_with_an_over_long_expression_is_refused(admin_client_hub, sandbox, config):
    expression = 'status = "ready-for-handling" or ' * 70 + "false"

    response = admin_client_hub.post(change_url(config), form_data(filter_type="FromOrders", expression=expression))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["expression"][0].startswith("The expression is too long")
    assert config_posts(sandbox) == []


def test_from_orders_needs_an_expression(admin_client_hub, sandbox, config):
    response = admin_client_hub.post(change_url(config), form_data(filter_type="FromOrders", expression=""))

    assert response.status_code == 200
    assert "needs an expression" in response.context["adminform"].form.errors["expression"][0]
    assert config_posts(sandbox) == []


def test_a_valid_from_orders_config_is_pushed_without_status(admin_client_hub, sandbox, config):
    expression = '(status = "ready-for-handling" and salesChannel = "1")'
    response = admin_client_hub.post(change_url(config), form_data(
        filter_type="FromOrders", expression=expression, disable_single_fire="on",
        statuses=["ready-for-handling"]), follow=True)

    assert response.status_code == 200
    assert sandbox.feed_config["filter"] == {"type": "FromOrders", "expression": expression, "disableSingleFire": True}
    body = json.loads(config_posts(sandbox)[0].body)
    assert "status" not in body["filter"]
    saved = FeedConfig.objects.get(pk=config.pk)
    assert saved.statuses == [] and saved.expression == expression and saved.disable_single_fire is True
    assert any("Pushed to VTEX" in m for m in messages_of(response))


def test_switching_back_to_from_workflow_clears_the_expression(admin_client_hub, sandbox, config):
    config.filter_type, config.expression, config.disable_single_fire = "FromOrders", "value > 100", True
    config.save()

    admin_client_hub.post(change_url(config), form_data(expression="value > 100", disable_single_fire="on"))

    saved = FeedConfig.objects.get(pk=config.pk)
    assert (saved.filter_type, saved.expression, saved.disable_single_fire) == ("FromWorkflow", "", False)
    assert set(sandbox.feed_config["filter"]) == {"type", "status"}


@pytest.mark.parametrize("field, value", [
    ("visibility_timeout_seconds", "0"),
    ("visibility_timeout_seconds", "43201"),
    ("retention_seconds", "345599"),
    ("retention_seconds", "1209601"),
])
def test_queue_bounds_are_enforced(admin_client_hub, sandbox, config, field, value):
    response = admin_client_hub.post(change_url(config), form_data(**{field: value}))

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert config_posts(sandbox) == []


@pytest.mark.parametrize("field, value", [
    ("visibility_timeout_seconds", "1"), ("visibility_timeout_seconds", "43200"),
    ("retention_seconds", "345600"), ("retention_seconds", "1209600"),
])
def test_the_bounds_themselves_are_accepted_by_the_form_and_by_vtex(admin_client_hub, sandbox, config, field, value):
    response = admin_client_hub.post(change_url(config), form_data(**{field: value}), follow=True)

    assert any("Pushed to VTEX" in m for m in messages_of(response))
    key = {"visibility_timeout_seconds": "visibilityTimeoutInSeconds",
           "retention_seconds": "MessageRetentionPeriodInSeconds"}[field]
    assert sandbox.feed_config["queue"][key] == int(value)


@pytest.mark.parametrize("status", [409, 503])
def test_vtex_refusing_shows_an_error_and_records_its_answer(admin_client_hub, sandbox, config, status):
    before = sandbox.feed_config
    sandbox.fail_next("feed_config_set", status)

    response = admin_client_hub.post(change_url(config), form_data(statuses=["invoiced"]), follow=True)

    errors = [str(m) for m in response.context["messages"] if m.level_tag == "error"]
    assert len(errors) == 1 and "VTEX did NOT take" in errors[0] and f"HTTP {status}" in errors[0]
    assert sandbox.feed_config == before
    saved = FeedConfig.objects.get(pk=config.pk)
    assert saved.statuses == ["invoiced"]  # the hub's own copy is saved either way
    assert saved.push_accepted is False and f"HTTP {status}" in saved.vtex_answer
    assert saved.pushed_at is not None


def test_load_from_vtex_highlights_the_fields_that_drifted(admin_client_hub, sandbox, config):
    admin_client_hub.post(change_url(config), form_data(statuses=["ready-for-handling", "cancel"]))
    assert sandbox.feed_config["filter"]["status"] == ["ready-for-handling", "cancel"]
    in_sync = admin_client_hub.get(load_url(config))
    assert b"matches the hub" in in_sync.content and b'class="drift"' not in in_sync.content

    sandbox.feed_config = {"filter": {"type": "FromWorkflow", "status": ["cancel", "invoiced"]},
                           "queue": {"visibilityTimeoutInSeconds": 60, "MessageRetentionPeriodInSeconds": 604800}}
    response = admin_client_hub.get(load_url(config))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-field="statuses" class="drift"' in html
    assert 'data-field="visibility_timeout_seconds" class="drift"' in html
    assert 'data-field="retention_seconds" class="same"' in html
    assert 'data-field="filter_type" class="same"' in html
    assert "cancel, invoiced" in html and "differs from the hub" in html
    assert [item.field for item in response.context["result"].drift] == ["statuses", "visibility_timeout_seconds"]


def test_load_reads_the_lower_case_retention_key_and_a_type_change_is_drift(sandbox, config):
    sandbox.feed_config = {"filter": {"type": "FromOrders", "expression": "value > 100"},
                           "queue": {"visibilityTimeoutInSeconds": 250, "MessageRetentionPeriodInSeconds": 345600}}

    result = feed_config_load(store=config.store)

    assert result.ok and result.vtex["retention_seconds"] == 345600  # VTEX answered messageRetention… (lower m)
    assert result.vtex["disable_single_fire"] is False
    assert {item.field for item in result.drift} == {"filter_type", "statuses", "expression", "disable_single_fire"}


@pytest.mark.parametrize("fault, expected", [
    ("not_configured", "not configured on VTEX"),
    (401, "refused the credentials"),
    ("timeout", "did not answer"),
])
def test_load_explains_why_vtex_could_not_answer(admin_client_hub, sandbox, config, fault, expected):
    if fault == "not_configured":
        sandbox.feed_config = None
    elif fault == "timeout":
        sandbox.fail_next("feed_config_get", "timeout", delay_seconds=2.5)  # the client gives up after 2 s
    else:
        sandbox.fail_next("feed_config_get", fault)

    response = admin_client_hub.get(load_url(config))

    assert response.status_code == 200
    assert expected in response.content.decode()
    assert not response.context["result"].ok


def test_a_push_with_a_wrong_token_says_so(admin_client_hub, sandbox, config):
    config.store.app_token = "wrong"
    config.store.save()

    response = admin_client_hub.post(change_url(config), form_data(), follow=True)

    assert any("refused the credentials (HTTP 401)" in m for m in messages_of(response))


@pytest.fixture
def stored_order(sandbox, store) -> OrderSync:
    sandbox.create_orders(1)
    run_sync()
    order = OrderSync.objects.get()
    assert order.order_snapshot
    return order


def test_an_expression_is_tested_against_a_stored_order(admin_client_hub, config, stored_order):
    order_id = stored_order.order_id
    url = expression_url(config)
    matches = admin_client_hub.post(url, {"expression": f'orderId = "{order_id}"', "order_id": order_id})
    misses = admin_client_hub.post(url, {"expression": 'orderId = "nope"', "order_id": order_id})

    assert matches.status_code == misses.status_code == 200
    assert matches.context["result"].matched is True and b"Result: true" in matches.content
    assert misses.context["result"].matched is False and b"Result: false" in misses.content
    assert FeedConfig.objects.get(pk=config.pk).expression == ""  # nothing is saved


def test_the_tester_shows_the_value_and_which_document_it_read(admin_client_hub, config, stored_order):
    response = admin_client_hub.post(expression_url(config), {"expression": "{'status': status, 'n': $count(items)}",
                                                              "order_id": stored_order.order_id})

    value = json.loads(response.context["result"].value)
    assert value == {"status": "ready-for-handling", "n": len(stored_order.order_snapshot["items"])}
    html = response.content.decode()
    assert 'id="expression-value"' in html and "&quot;status&quot;: &quot;ready-for-handling&quot;" in html
    # The stored document is the one fetched at ready-for-handling; the list now shows the order as handling.
    assert OrderSync.objects.get(pk=stored_order.pk).vtex_status == "handling"
    document = response.context["document"]
    assert document["status_then"] == "ready-for-handling" and document["changed"] is True
    assert document["fetched_at"] is not None
    assert "as the hub stored it" in html and "ago)" in html
    assert "VTEX has since reported <code>handling</code>" in html


def test_the_expression_test_reports_syntax_errors_and_unknown_orders(admin_client_hub, config, stored_order):
    url, order_id = expression_url(config), stored_order.order_id
    broken = admin_client_hub.post(url, {"expression": "status = ", "order_id": order_id})
    unknown = admin_client_hub.post(url, {"expression": "value > 1", "order_id": "v999-01"})
    failing = admin_client_hub.post(url, {"expression": '"a" + 1', "order_id": order_id})
    too_long = admin_client_hub.post(url, {"expression": "1" * 2001, "order_id": order_id})

    assert "Invalid JSONata" in broken.context["form"].errors["expression"][0] and broken.context["result"] is None
    assert "No stored order document" in unknown.context["form"].errors["order_id"][0]
    assert failing.context["result"].error.startswith("Evaluation failed")
    assert b"Error: Evaluation failed" in failing.content
    assert "too long" in too_long.context["form"].errors["expression"][0]


def test_a_runaway_expression_in_the_tester_is_cut_off_with_a_message(admin_client_hub, config, stored_order):
    started = time.monotonic()
    response = admin_client_hub.post(expression_url(config), {"expression": BACKTRACKING,
                                                              "order_id": stored_order.order_id})

    assert time.monotonic() - started < WALL_SECONDS + 1.5
    assert response.status_code == 200
    assert response.context["result"].error.startswith("Too slow: stopped after")
    assert b"Error: Too slow: stopped after" in response.content


def test_a_get_shows_the_form_and_evaluates_nothing(admin_client_hub, config, stored_order):
    before = expressions.children_started
    response = admin_client_hub.get(expression_url(config), {"expression": BACKTRACKING,
                                                             "order_id": stored_order.order_id})

    assert expressions.children_started == before
    assert response.status_code == 200
    assert response.context["result"] is None and b"Result:" not in response.content
    assert b'<form method="post"' in response.content and b"csrfmiddlewaretoken" in response.content


@pytest.mark.parametrize("who", ["viewer", "operator"])
def test_those_who_may_not_edit_the_feed_config_get_403_and_nothing_is_evaluated(request, config, stored_order, who):
    client = request.getfixturevalue(f"{who}_client")

    before = expressions.children_started
    response = client.post(expression_url(config), {"expression": BACKTRACKING, "order_id": stored_order.order_id})

    assert response.status_code == 403
    assert expressions.children_started == before
    assert b"Result" not in response.content and b"Too slow" not in response.content
    assert client.get(expression_url(config)).status_code == 403


def test_the_tester_post_needs_the_csrf_token(administrator, config, stored_order):
    client = Client(enforce_csrf_checks=True)
    client.force_login(administrator)
    data = {"expression": "true", "order_id": stored_order.order_id}

    refused = client.post(expression_url(config), data)
    form_page = client.get(expression_url(config))
    accepted = client.post(expression_url(config), {**data, "csrfmiddlewaretoken": form_page.context["csrf_token"]})

    assert refused.status_code == 403 and b"Result" not in refused.content
    assert accepted.status_code == 200 and accepted.context["result"].matched is True


def test_the_expression_test_offers_stored_orders_and_prefills_the_saved_expression(admin_client_hub, config,
                                                                                      stored_order):
    FeedConfig.objects.filter(pk=config.pk).update(filter_type="FromOrders", expression="value > 100")

    response = admin_client_hub.get(expression_url(config))

    assert response.context["form"].initial["expression"] == "value > 100"
    assert f'<option value="{stored_order.order_id}">' in response.content.decode()


def test_viewer_and_operator_cannot_save_the_feed_config(viewer_client, operator_client, sandbox, config):
    for client in (viewer_client, operator_client):
        response = client.post(change_url(config), form_data(statuses=["invoiced"]))
        assert response.status_code == 403
    assert config_posts(sandbox) == []
    assert FeedConfig.objects.get(pk=config.pk).statuses == config.statuses


@pytest.mark.parametrize("who, change_page, add_page, load_page, test_page", [
    ("viewer", 200, 403, 200, 403),
    ("operator", 200, 403, 200, 403),
    ("administrator", 200, 200, 200, 200),
])
def test_every_feed_config_page_answers_each_group_as_its_permissions_say(
        request, sandbox, config, who, change_page, add_page, load_page, test_page):
    client = request.getfixturevalue({"viewer": "viewer_client", "operator": "operator_client",
                                      "administrator": "admin_client_hub"}[who])
    pages = {
        reverse("admin:feeds_feedconfig_changelist"): 200,
        change_url(config): change_page,
        reverse("admin:feeds_feedconfig_add"): add_page,
        load_url(config): load_page,
        expression_url(config): test_page,
    }
    for url, expected in pages.items():
        response = client.get(url)
        assert response.status_code == expected, url
        assert TOKEN.encode() not in response.content and b"erp-secret-9931" not in response.content, url


def test_only_administrators_get_an_editable_form_and_the_tools(viewer_client, admin_client_hub, config):
    viewer_page = viewer_client.get(change_url(config)).content.decode()
    admin_page = admin_client_hub.get(change_url(config)).content.decode()

    assert 'type="checkbox" name="statuses"' in admin_page and 'name="statuses"' not in viewer_page
    for page in (viewer_page, admin_page):
        assert load_url(config) in page
    assert expression_url(config) in admin_page and expression_url(config) not in viewer_page  # the tester
    assert "possibly hundreds of times" in admin_page  # disableSingleFire is explained


def test_the_service_helpers_on_their_own():
    assert jsonata_check("value > 100") is None
    assert jsonata_check("$count(items[").startswith("Invalid JSONata")
    assert jsonata_test("value > 100", {"value": 150}).matched is True
    assert jsonata_test("items[price > 10]", {"items": [{"price": 1}]}).matched is False  # undefined is false
    assert jsonata_test("( $f := function($n){ $f($n + 1) }; $f(0) )", {}).error  # runaway, stopped
    workflow = FeedConfig(filter_type="FromWorkflow", statuses=["invoiced"], expression="x", disable_single_fire=True,
                          visibility_timeout_seconds=250, retention_seconds=345600)
    assert feed_config_body(workflow) == {
        "filter": {"type": "FromWorkflow", "status": ["invoiced"]},
        "queue": {"visibilityTimeoutInSeconds": 250, "MessageRetentionPeriodInSeconds": 345600},
    }
    orders = FeedConfig(filter_type="FromOrders", statuses=["invoiced"], expression="x",
                        visibility_timeout_seconds=250, retention_seconds=345600)
    assert feed_config_body(orders)["filter"] == {"type": "FromOrders", "expression": "x", "disableSingleFire": False}


def test_adding_a_feed_config_pushes_it_too(admin_client_hub, sandbox, store):
    FeedConfig.objects.filter(store=store).delete()
    store_page = admin_client_hub.get(reverse("admin:core_store_change", args=[store.pk])).content.decode()
    add_url = reverse("admin:feeds_feedconfig_add") + f"?store={store.pk}"
    assert add_url in store_page  # the store page offers to create its missing configuration

    response = admin_client_hub.post(reverse("admin:feeds_feedconfig_add"),
                                     form_data(store=str(store.pk), statuses=["invoiced"]), follow=True)

    assert any("Pushed to VTEX" in m for m in messages_of(response))
    assert FeedConfig.objects.get(store=store).statuses == ["invoiced"]
    assert sandbox.feed_config["filter"] == {"type": "FromWorkflow", "status": ["invoiced"]}
