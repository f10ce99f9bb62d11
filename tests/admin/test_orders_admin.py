"""The order pages and staff actions, through the Django test client, against the sandbox over HTTP."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from orders.models import OrderSync, SyncAttempt
from tests.conftest import TOKEN
from tests.helpers import run_sync

pytestmark = pytest.mark.django_db(transaction=True)
CHANGELIST = "/admin/orders/ordersync/"


def _detail(sync: OrderSync) -> str:
    return reverse("admin:orders_ordersync_change", args=[sync.pk])


def _act(sync: OrderSync, action: str) -> str:
    return reverse("admin:orders_ordersync_act", args=[sync.pk, action])


@pytest.fixture
def handled(sandbox, store) -> OrderSync:
    [order_id] = sandbox.create_orders(1)
    run_sync()
    return OrderSync.objects.get(order_id=order_id)


@pytest.fixture
def refused(sandbox, store) -> OrderSync:
    """An order the ERP refused once (422): parked as needs attention."""
    [order_id] = sandbox.create_orders(1)
    sandbox.fail_next("erp", 422, body='{"error": "unknown SKU"}')
    run_sync()
    sync = OrderSync.objects.get(order_id=order_id)
    assert sync.state == "needs_attention"
    return sync


def test_every_group_can_read_the_list_and_the_detail(handled, viewer_client, operator_client, admin_client_hub):
    for client in (viewer_client, operator_client, admin_client_hub):
        listing = client.get(CHANGELIST)
        assert listing.status_code == 200 and handled.order_id in listing.text
        assert "Handling started" in listing.text
        detail = client.get(_detail(handled))
        assert detail.status_code == 200
        assert "Timeline" in detail.text and "Start handling" in detail.text
        assert "Events (2)" in detail.text  # ready-for-handling, and the handling event it caused


def test_search_finds_an_order_by_id_sequence_and_email(handled, admin_client_hub):
    # By e-mail only for users who may see personal data (the Viewer's side: tests/admin/test_personal_data.py).
    handled.refresh_from_db()
    other = OrderSync.objects.create(store=handled.store, order_id="999999999999-01", sequence="555",
                                     customer_email="someone@example.com")
    for term in (handled.order_id, handled.order_id[:8], handled.sequence, handled.customer_email):
        page = admin_client_hub.get(CHANGELIST, {"q": term})
        assert handled.order_id in page.text and other.order_id not in page.text, term
    assert other.order_id in admin_client_hub.get(CHANGELIST, {"q": "555"}).text


def test_filters_by_state_and_error_kind(refused, handled, viewer_client):
    page = viewer_client.get(CHANGELIST, {"state__exact": "needs_attention"})
    assert refused.order_id in page.text and handled.order_id not in page.text
    page = viewer_client.get(CHANGELIST, {"error_kind": "erp_refused"})
    assert refused.order_id in page.text and handled.order_id not in page.text
    page = viewer_client.get(CHANGELIST, {"age": "1h"})
    assert refused.order_id in page.text and handled.order_id in page.text


def test_the_list_costs_the_same_queries_for_5_or_50_orders(store, viewer_client):
    def make(n: int) -> None:
        OrderSync.objects.bulk_create([OrderSync(store=store, order_id=f"{len_before + i:012d}-01")
                                       for i in range(n)])
    len_before = 0
    make(5)
    viewer_client.get(CHANGELIST)
    with CaptureQueriesContext(connection) as few:
        assert viewer_client.get(CHANGELIST).status_code == 200
    len_before = 100
    make(45)
    with CaptureQueriesContext(connection) as many:
        assert viewer_client.get(CHANGELIST).status_code == 200
    assert len(many) == len(few)


def test_a_viewer_sees_no_buttons_and_cannot_act(refused, viewer_client):
    detail = viewer_client.get(_detail(refused))
    assert 'id="hub-actions"' not in detail.text
    assert viewer_client.post(_act(refused, "retry")).status_code == 403
    response = viewer_client.post(CHANGELIST, {"action": "bulk_retry", "_selected_action": [refused.pk],
                                               "confirm": "yes"})
    assert response.status_code in (200, 302)
    refused.refresh_from_db()
    assert refused.state == "needs_attention"
    assert not SyncAttempt.objects.filter(order=refused, step="staff").exists()


def test_personal_data_is_masked_unless_the_user_may_see_it(handled, viewer_client, operator_client,
                                                             admin_client_hub):
    handled.refresh_from_db()
    profile = handled.order_snapshot["clientProfileData"]
    secrets = [profile["email"], profile["firstName"], profile["lastName"], profile["document"],
               handled.order_snapshot["shippingData"]["address"]["street"]]
    for client in (viewer_client, operator_client):
        page = client.get(_detail(handled)).text
        assert "personal data masked" in page
        for value in secrets:
            assert value not in page, value
        assert handled.order_snapshot["shippingData"]["address"]["city"] in page  # coarse place kept
    page = admin_client_hub.get(_detail(handled)).text
    assert "personal data masked" not in page
    assert all(value in page for value in secrets)


def test_no_page_shows_the_app_token_or_erp_header_values(handled, admin_client_hub):
    for url in (CHANGELIST, _detail(handled), "/admin/orders/syncattempt/", "/admin/feeds/feedevent/"):
        page = admin_client_hub.get(url)
        assert page.status_code == 200
        assert TOKEN not in page.text and "erp-secret-9931" not in page.text, url
    assert "Authorization" in admin_client_hub.get(_detail(handled)).text  # the header's name only


def test_retry_now_puts_a_parked_order_back_to_work(refused, operator_client, operator, sandbox):
    page = operator_client.get(_detail(refused)).text
    assert 'value="retry"' in page

    response = operator_client.post(_act(refused, "retry"))

    assert response.status_code == 302
    refused.refresh_from_db()
    assert refused.state == "handling_started"  # the queued job ran (django-q2 sync mode in tests)
    staff = SyncAttempt.objects.get(order=refused, step="staff")
    assert staff.triggered_by == operator.username and "Retry now requested" in staff.message
    later = SyncAttempt.objects.filter(order=refused, created_at__gte=staff.created_at).exclude(step="staff")
    assert {a.triggered_by for a in later} == {operator.username}
    assert [d.replay for d in sandbox.erp_deliveries if d.order_id == refused.order_id] == [False]


def test_start_handling_by_hand_only_after_the_erp_has_the_order(sandbox, store, operator_client):
    sandbox.create_orders(2)
    sandbox.fail_next("erp", 422)  # one of them is refused by the ERP
    sandbox.fail_next("start_handling", 403)  # the other's start-handling is refused
    run_sync()
    parked = OrderSync.objects.filter(state="needs_attention")
    assert parked.count() == 2
    not_in_erp = parked.get(erp_accepted_at__isnull=True)
    erp_has_it = parked.get(erp_accepted_at__isnull=False)
    page = operator_client.get(_detail(not_in_erp)).text
    assert 'disabled title="the ERP has not accepted this order yet"' in page

    operator_client.post(_act(not_in_erp, "start_handling"))
    operator_client.post(_act(erp_has_it, "start_handling"))

    not_in_erp.refresh_from_db()
    erp_has_it.refresh_from_db()
    assert not_in_erp.state == "needs_attention"
    assert erp_has_it.state == "handling_started"
    assert not [c for c in sandbox.start_handling_calls if c[0] == not_in_erp.order_id]
    ok = SyncAttempt.objects.get(order=erp_has_it, step="start_handling", outcome="ok")
    assert ok.http_status == 204 and ok.triggered_by == "otto-operator"


def test_resend_uses_the_same_idempotency_key(handled, operator_client, sandbox):
    operator_client.post(_act(handled, "resend"))

    deliveries = [d for d in sandbox.erp_deliveries if d.order_id == handled.order_id]
    assert len(deliveries) == 2
    assert deliveries[0].idempotency_key == deliveries[1].idempotency_key and deliveries[1].replay
    handled.refresh_from_db()
    assert handled.state == "handling_started"
    last = SyncAttempt.objects.filter(order=handled, step="erp_send").last()
    assert last.message.startswith("resent") and last.triggered_by == "otto-operator"


def test_mark_resolved_needs_a_reason(refused, operator_client):
    operator_client.post(_act(refused, "resolve"), {"reason": "  "})
    refused.refresh_from_db()
    assert refused.state == "needs_attention"

    operator_client.post(_act(refused, "resolve"), {"reason": "typed into the ERP by hand"})

    refused.refresh_from_db()
    assert refused.state == "resolved" and refused.next_attempt_at is None
    staff = SyncAttempt.objects.get(order=refused, step="staff")
    assert staff.message == "Mark resolved requested by otto-operator: typed into the ERP by hand"


def test_bulk_retry_confirms_then_acts_and_skips_with_reasons(refused, handled, operator_client):
    ids = [refused.pk, handled.pk]
    page = operator_client.post(CHANGELIST, {"action": "bulk_retry", "_selected_action": ids})
    assert page.status_code == 200
    assert "1 of 2 selected order(s) will be queued for retry" in page.text
    assert "Skipped: nothing to retry: the order is handling started" in page.text
    refused.refresh_from_db()
    assert refused.state == "needs_attention"  # nothing happened before confirming

    done = operator_client.post(CHANGELIST, {"action": "bulk_retry", "_selected_action": ids, "confirm": "yes"},
                                follow=True)

    assert "1 of 2 order(s) queued for retry" in done.text
    refused.refresh_from_db()
    assert refused.state == "handling_started"


def test_bulk_resolve_asks_for_a_reason(refused, operator_client):
    ids = [refused.pk]
    again = operator_client.post(CHANGELIST, {"action": "bulk_resolve", "_selected_action": ids, "confirm": "yes"})
    assert "A reason is required." in again.text
    operator_client.post(CHANGELIST, {"action": "bulk_resolve", "_selected_action": ids, "confirm": "yes",
                                      "reason": "duplicate order"})
    refused.refresh_from_db()
    assert refused.state == "resolved"


def test_act_view_refuses_get_and_unknown_actions(refused, operator_client):
    assert operator_client.get(_act(refused, "retry")).status_code == 405
    assert operator_client.post(_act(refused, "explode")).status_code == 400
