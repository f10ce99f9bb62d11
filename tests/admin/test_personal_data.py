"""Customer data is shown only to users with *view personal data*, on every admin page it can reach.

The ERP of the sandbox refuses each order with an answer quoting the customer's e-mail, document and phone
(sandbox `erp_refuse_customer_data`), as real ERPs do; the hub keeps that answer on the timeline, in
`last_error` and on the dashboard. A Viewer must see none of it; an Administrator sees all of it.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from django.contrib.auth.models import AnonymousUser
from django.urls import reverse

from feeds.models import FeedConfig, FeedEvent
from integrationhub.personal_data import MASK, can_see_personal_data, for_user, mask_personal_data, mask_text
from orders.models import OrderSync, SyncAttempt
from tests.helpers import run_sync

CHANGELIST = "/admin/orders/ordersync/"


# ---- mask_text ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, hidden", [
    ("customer ana.souza+vtex@example.com.br failed", "ana.souza+vtex@example.com.br"),
    ("percent-encoded ana%40example.com in a URL", "ana%40example.com"),
    ("CPF 123.456.789-09 refused", "123.456.789-09"),
    ("document 12345678909.", "12345678909"),
    ("cpf:12345678909;", "12345678909"),
    ("CNPJ 11.222.333/0001-44", "11.222.333/0001-44"),
    ("phone +55 (11) 91234-5678", "+55 (11) 91234-5678"),
    ("phone (11) 91234-5678", "(11) 91234-5678"),
    ("phone +5511912345678", "+5511912345678"),
    ("phone 11 91234 5678", "11 91234 5678"),
    ("phone +55 11 91234-5678", "11 91234-5678"),  # the country code alone identifies no one
    ("card 4111 1111 1111 1111 declined", "4111 1111 1111 1111"),
    ("card 4111-1111-1111-1111", "4111-1111-1111-1111"),
    ("card 4111111111111111", "4111111111111111"),
    ("postal code 22630-011", "22630-011"),
    ('{"firstName": "Ana", "id": 1}', '"Ana"'),
    ('{"error": {"document": "845.134.270-19", "receiverName": "Ana Souza"', "Ana Souza"),  # cut-off excerpt
])
def test_mask_text_hides_emails_documents_phones_and_cards(text: str, hidden: str) -> None:
    masked = mask_text(text)
    assert hidden not in masked and MASK in masked


@pytest.mark.parametrize("text", [
    "order 1172452900788-01 refused",  # VTEX order id: 13 digits, dash, 2 digits
    "seller order 00-1172452900788-01",
    "marketplace order v502556llux-01 and ERP-000123",
    "sequence 502556",
    "at 2024-02-04T20:09:43.899958+00:00 and 2024-02-11T09:14:41.3695207Z",
    "on 2024-05-01 12:34:56 or 01/05/2024 at 12:34:56.123456",
    "ERP refused the order: HTTP 422 after 1234 ms, 3 of 10 attempts",
    "GET /api/orders/feed/config: HTTP 503 503 Service Unavailable",
    "total 1234567.89 or R$ 1.234.567,89",
    "POST http://127.0.0.1:8765/erp/orders",
    "profile 5660c55f-714d-4b14-88a7-b03e9bfbdd2y, id 12345678-1234-5678-9abc-def012345678",
    "transaction E4CFCEA1A2BF42AE9A3FAE8ED460CBFE, key 1234567890ABCDEF, invoice CFe3520110006396000150459",
    '{"orderId": "1172452900788-01", "orderGroup": "1415461749731", "name": "Tênis Corrida 42"}',
])
def test_mask_text_keeps_order_ids_dates_statuses_amounts_and_identifiers(text: str) -> None:
    assert mask_text(text) == text


def test_mask_text_leaves_empty_text_alone() -> None:
    assert mask_text("") == ""


def test_mask_personal_data_masks_free_text_and_personal_fields_and_keeps_the_rest() -> None:
    document = {
        "orderId": "1172452900788-01", "orderGroup": "1415461749731", "sequence": "502556", "value": 1234567,
        "creationDate": "2024-02-04T20:09:43.899958+00:00",
        "openTextField": {"value": "ring Ana at +55 11 91234-5678 or ana@example.com, gate 12"},
        "commercialConditionData": "approved for CPF 123.456.789-09",
        "items": [{"ean": "7890000000018", "name": "Caneca Cerâmica", "price": 3490}],
        "shippingData": {"address": {"street": "Rua X", "city": "Curitiba", "postalCode": "80100-000"}},
        "paymentData": {"transactions": [{"payments": [{"billingAddress": {"street": "Rua Y", "number": "4440"},
                                                         "cvv2": "351", "firstDigits": "444433"}]}]},
    }
    masked = mask_personal_data(document)

    assert masked["openTextField"]["value"] == f"ring Ana at +55 {MASK} or {MASK}, gate 12"
    assert masked["commercialConditionData"] == f"approved for CPF {MASK}"
    assert masked["shippingData"]["address"] == {"street": MASK, "city": "Curitiba", "postalCode": MASK}
    payment = masked["paymentData"]["transactions"][0]["payments"][0]
    assert payment == {"billingAddress": {"street": MASK, "number": MASK}, "cvv2": MASK, "firstDigits": MASK}
    for key in ("orderId", "orderGroup", "sequence", "value", "creationDate"):
        assert masked[key] == document[key], key
    assert masked["items"] == document["items"]
    assert document["openTextField"]["value"].startswith("ring Ana at +55")  # the original is left alone


@pytest.mark.django_db
def test_for_user_follows_the_view_personal_data_permission(django_user_model) -> None:
    viewer = django_user_model.objects.create_user("v", is_staff=True)
    boss = django_user_model.objects.create_superuser("boss", password="x")
    text = "customer ana@example.com document 12345678909"

    assert not can_see_personal_data(viewer) and not can_see_personal_data(AnonymousUser())
    assert not can_see_personal_data(None)
    assert for_user(viewer, text) == f"customer {MASK} document {MASK}"
    assert for_user(None, {"email": "ana@example.com"}) == {"email": MASK}
    assert can_see_personal_data(boss) and for_user(boss, text) == text


# ---- every admin page, after a real sync against the refusing ERP ---------------------------------------

@pytest.fixture
def refused(sandbox, store) -> list[str]:
    """Three orders the ERP refused, quoting their customers, plus feed payloads carrying customer data."""
    order_ids = sandbox.create_orders(3)
    sandbox.erp_refuse_customer_data = True
    first = sandbox.order(order_ids[0])["clientProfileData"]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
    # A feed item VTEX sends with extra fields, and a malformed one: both are stored as received.
    sandbox.enqueue_raw({"eventId": "A" * 32, "domain": "Fulfillment", "state": "ready-for-handling",
                         "lastState": "window-to-cancel", "orderId": order_ids[0], "lastChange": now,
                         "currentChange": now, "customer": {"email": first["email"], "phone": first["phone"]}})
    sandbox.enqueue_raw({"eventId": "B" * 32, "note": f"from {first['email']} doc {first['document']}"})
    run_sync()
    assert set(OrderSync.objects.values_list("state", flat=True)) == {"needs_attention"}
    assert all("failed validation" in sync.last_error for sync in OrderSync.objects.all())
    # An event whose processing failed with an error quoting the customer (e.g. a connector's exception).
    FeedEvent.objects.create(store=store, order_id=order_ids[1], state="handling", outcome="failed",
                             payload={"orderId": order_ids[1]}, error=f"ValueError: bad phone {first['phone']}")
    return order_ids


def _customer_data(sandbox, order_ids: list[str]) -> list[str]:
    """Every form in which the customers' e-mail, document, phone and name could be printed."""
    values: list[str] = []
    for order_id in order_ids:
        profile = sandbox.order(order_id)["clientProfileData"]
        values += [profile["email"], profile["document"], re.sub(r"\D", "", profile["document"]),
                   profile["phone"], profile["phone"].lstrip("+"), f"{profile['firstName']} {profile['lastName']}"]
    return values


def _admin_pages(store, order_ids: list[str]) -> list[str]:
    syncs = OrderSync.objects.filter(order_id__in=order_ids)
    attempts = SyncAttempt.objects.filter(order__in=syncs)
    return [
        "/admin/",
        CHANGELIST, f"{CHANGELIST}?state__exact=needs_attention", f"{CHANGELIST}?error_kind=erp_refused",
        *[reverse("admin:orders_ordersync_change", args=[sync.pk]) for sync in syncs],
        "/admin/orders/syncattempt/", "/admin/orders/syncattempt/?outcome__exact=failed",
        *[reverse("admin:orders_syncattempt_change", args=[attempt.pk]) for attempt in attempts],
        "/admin/feeds/feedevent/",
        *[reverse("admin:feeds_feedevent_change", args=[event.pk]) for event in FeedEvent.objects.all()],
        reverse("admin:core_store_change", args=[store.pk]),
        reverse("admin:feeds_feedconfig_change", args=[FeedConfig.objects.get(store=store).pk]),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_viewer_sees_no_customer_data_on_any_admin_page(refused, sandbox, store, viewer_client):
    secrets = _customer_data(sandbox, refused)
    pages = _admin_pages(store, refused)

    for url in pages:
        response = viewer_client.get(url)
        assert response.status_code == 200, url
        leaked = [value for value in secrets if value in response.text]
        assert not leaked, f"{url} shows {leaked}"
    # The pages did show the ERP's answer and the payloads, masked.
    order_page = viewer_client.get(pages[4]).text
    assert "failed validation" in order_page and f"customer {MASK} document {MASK} phone {MASK}" in order_page
    assert f"customer {MASK}" in viewer_client.get("/admin/").text


@pytest.mark.django_db(transaction=True)
def test_an_administrator_sees_the_customer_data_the_erp_quoted(refused, sandbox, store, admin_client_hub):
    profile = sandbox.order(refused[0])["clientProfileData"]
    quoted = f"customer {profile['email']} document {profile['document']} phone {profile['phone']}"
    sync = OrderSync.objects.get(order_id=refused[0])
    refusal = SyncAttempt.objects.filter(order=sync, step="erp_send").latest("id")
    event = FeedEvent.objects.get(event_id="A" * 32)

    assert quoted in admin_client_hub.get(reverse("admin:orders_ordersync_change", args=[sync.pk])).text
    assert quoted in admin_client_hub.get(reverse("admin:orders_syncattempt_change", args=[refusal.pk])).text
    assert profile["phone"] in admin_client_hub.get(reverse("admin:feeds_feedevent_change", args=[event.pk])).text
    assert profile["email"] in admin_client_hub.get(f"{CHANGELIST}?q={refused[0]}").text  # short_error
    assert any(value in admin_client_hub.get("/admin/").text for value in _customer_data(sandbox, refused))


@pytest.mark.django_db(transaction=True)
def test_only_users_who_may_see_personal_data_can_search_by_email(refused, sandbox, viewer_client,
                                                                   admin_client_hub):
    email = sandbox.order(refused[0])["clientProfileData"]["email"]
    assert OrderSync.objects.filter(customer_email=email).exists()

    as_viewer = viewer_client.get(CHANGELIST, {"q": email})
    as_admin = admin_client_hub.get(CHANGELIST, {"q": email})

    assert as_viewer.context["cl"].result_count == 0 and refused[0] not in as_viewer.text
    assert "email" not in as_viewer.context["cl"].search_help_text
    assert refused[0] in as_admin.text and refused[1] not in as_admin.text
    assert "email" in as_admin.context["cl"].search_help_text
    assert refused[0] in viewer_client.get(CHANGELIST, {"q": refused[0]}).text  # by order id: still fine


def test_the_dashboard_filter_masks_for_users_without_the_permission() -> None:
    from orders.templatetags.hub_dashboard import personal

    assert personal("ERP said: customer ana@example.com", AnonymousUser()) == f"ERP said: customer {MASK}"
    assert personal(None, AnonymousUser()) is None


def test_an_unannotated_row_is_masked_by_default() -> None:
    """A display method handed a row that did not come through the admin's queryset shows it masked."""
    from integrationhub.personal_data import shown

    assert shown(SyncAttempt(message="phone +5511912345678"), "phone +5511912345678") == f"phone {MASK}"

