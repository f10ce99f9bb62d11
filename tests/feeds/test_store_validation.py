"""One validation for every way a store is written: connect_store and the admin refuse the same input, write nothing."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.forms.models import model_to_dict
from django.urls import reverse

from core.models import ErpConnection, Store
from tests.admin.conftest import admin_client_hub, administrator  # noqa: F401  (fixtures: the Administrator group)
from tests.admin.test_store_admin import change_url, store_form

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "s3cr3t-in-url"
ERP_URL = "https://erp.example.com/vtex/orders"
TIMEOUT = "the ERP timeout must be more than 0 and at most 120 seconds"
NOT_A_SECRET_HOME = "send it as an ERP header instead (--erp-header-env / --erp-header, or the admin's ERP headers field)"

REFUSED = [
    ("--account", "evil.com#", "--account: 'evil.com#' is not a VTEX account name"),
    ("--account", "evil.com", "--account: 'evil.com' is not a VTEX account name"),
    ("--account", "-shop", "is not a VTEX account name"),
    ("--account", "a" * 64, "is not a VTEX account name"),
    ("--environment", "vtexcommercestable.com.br.evil.com#", "--environment: 'vtexcommercestable.com.br.evil.com#' is "
                                                             "not a VTEX environment name"),
    ("--environment", "x/y", "is not a VTEX environment name"),
    ("--base-url", "http://vtex.example.com", "--base-url: the base URL must be https (http only on loopback"),
    ("--base-url", "http://10.0.0.5:8080", "the base URL must be https"),
    ("--base-url", "https://vtex.example.com/api", "no path, query or fragment"),
    ("--base-url", "https://vtex.example.com?x=1", "no path, query or fragment"),
    ("--base-url", "https://vtex.example.com#.x", "no path, query or fragment"),
    ("--base-url", f"https://user:{SECRET}@vtex.example.com", "the base URL must not contain credentials"),
    ("--base-url", "ftp://127.0.0.1", "the base URL is not an http(s) URL"),
    ("--erp-url", f"https://user:{SECRET}@erp.example.com/orders",
     f"--erp-url: the ERP URL must not contain credentials (user:password@): {NOT_A_SECRET_HOME}"),
    ("--erp-url", f"https://erp.example.com/o?api_key={SECRET}", "query parameter 'api_key' looks like a secret"),
    ("--erp-url", f"https://erp.example.com/o?page=1&token={SECRET}", "parameter 'token' looks like a secret"),
    ("--erp-url", f"https://erp.example.com/o?key={SECRET}", "parameter 'key' looks like a secret"),
    ("--erp-url", f"https://erp.example.com/o?secret={SECRET}", "parameter 'secret' looks like a secret"),
    ("--erp-url", f"https://erp.example.com/o?password={SECRET}", "parameter 'password' looks like a secret"),
    ("--erp-url", f"https://erp.example.com/o?signature={SECRET}", "parameter 'signature' looks like a secret"),
    ("--erp-url", f"https://erp.example.com/o?X-Amz-Signature={SECRET}", "looks like a secret"),
    ("--erp-url", f"https://erp.example.com/o?apiKey={SECRET}", "looks like a secret"),
    ("--erp-url", f"https://erp.example.com/o?access_token={SECRET}", "looks like a secret"),
    ("--erp-url", "ftp://erp.example.com/orders", "--erp-url: the ERP URL is not an http(s) URL"),
    ("--erp-url", "https://erp.example.com/" + "a" * 300, "--erp-url: Ensure this value has at most 200 characters"),
    ("--erp-connector", "builtins.input", "--erp-connector: no ERP connector at 'builtins.input': choose one of"),
    ("--erp-connector", "os.system", "no ERP connector at 'os.system'"),
    ("--erp-timeout", "0", TIMEOUT),
    ("--erp-timeout", "-1", TIMEOUT),
    ("--erp-timeout", "121", TIMEOUT),
    ("--erp-timeout", "1e308", TIMEOUT),
    ("--erp-timeout", "nan", TIMEOUT),
    ("--erp-timeout", "inf", TIMEOUT),
    ("--app-key", "k" * 201, "--app-key: Ensure this value has at most 200 characters (it has 201)"),
    ("--app-key", "two words", "app key contains a space"),
    ("--app-token", "t" * 501, "--app-token: Ensure this value has at most 500 characters (it has 501)"),
    ("--app-token", "tok\nen", "app token contains a space, line break or control character"),
    ("--erp-header", "X-Api-Key: a\x07b", "the ERP header X-Api-Key contains a line break or control character"),
    ("--erp-header", "Bad Name: x", "an ERP header must look like 'Name: value'"),
    ("--erp-header", "X-Big: " + "v" * 5000, "the ERP header X-Big is longer than 4096 characters"),
    ("name", "a" * 65, "name: Ensure this value has at most 64 characters"),
]


def _create_args(**overrides: str) -> list[str]:
    options = {"name": "shop", "--account": "shop", "--app-key": "vtexappkey-shop-X", "--app-token": "tok-1",
               "--erp-url": ERP_URL, **overrides}
    args = ["connect_store", options.pop("name")]
    return args + [f"{flag}={value}" for flag, value in options.items()]  # "=": values may start with "-"


def _refused(args: list[str]) -> str:
    with pytest.raises(CommandError) as refused:
        call_command(*args, stdout=io.StringIO())
    return str(refused.value)


def _snapshot() -> list[dict]:
    return [model_to_dict(row) | {"updated": getattr(row, "updated_at", None)}
            for row in [*Store.objects.order_by("pk"), *ErpConnection.objects.order_by("pk")]]


@pytest.mark.parametrize("flag, value, expected", REFUSED)
def test_connect_store_refuses_it_when_creating_and_writes_nothing(transactional_db, flag, value, expected):
    message = _refused(_create_args(**{flag: value}))

    assert expected in message
    assert SECRET not in message
    assert Store.objects.count() == 0 and ErpConnection.objects.count() == 0


@pytest.mark.parametrize("flag, value, expected", [case for case in REFUSED if case[0] != "name"])
def test_connect_store_refuses_it_when_updating_and_changes_nothing(store, flag, value, expected):
    before = _snapshot()

    # A valid change beside the bad one: nothing of the call may be written.
    message = _refused(["connect_store", "acme", "--app-key", "vtexappkey-other-Y", f"{flag}={value}"])

    assert expected in message and SECRET not in message
    assert _snapshot() == before


@pytest.mark.parametrize("missing, expected", [
    ("--account", "--account: account is required for a new store"),
    ("--app-key", "--app-key: app key is required for a new store"),
    ("--app-token", "--app-token: app token is required for a new store"),
    ("--erp-url", "--erp-url: the ERP URL is required"),
])
def test_creating_a_store_needs_its_account_credentials_and_erp_url(transactional_db, monkeypatch, missing, expected):
    monkeypatch.delenv("VTEX_APP_TOKEN", raising=False)
    args = [arg for arg in _create_args() if not arg.startswith(missing + "=")]

    assert expected in _refused(args)
    assert Store.objects.count() == 0


def test_loopback_base_urls_may_be_http(transactional_db):
    for host in ("127.0.0.1:8765", "127.9.9.9", "[::1]:8765", "localhost:8765"):
        # --no-check: nothing listens there; this is about which URLs are accepted, not about reaching them.
        call_command(*_create_args(**{"--base-url": f"http://{host}/"}), "--no-check", stdout=io.StringIO())
        assert Store.objects.get(name="shop").vtex_base_url == f"http://{host}"


# --- the same rules in the admin, as an Administrator ------------------------------------------------

def _form_errors(response) -> str:
    errors = [str(response.context["adminform"].form.errors)]
    errors += [str(formset.formset.errors) for formset in response.context["inline_admin_formsets"]]
    return " ".join(errors)


STORE_FORM_REFUSED = [
    ({"account": "evil.com#"}, "is not a VTEX account name"),
    ({"environment": "vtexcommercestable.com.br.evil.com#"}, "is not a VTEX environment name"),
    ({"base_url": "http://vtex.example.com"}, "the base URL must be https"),
    ({"base_url": "https://vtex.example.com/api"}, "no path, query or fragment"),
    ({"base_url": f"https://u:{SECRET}@vtex.example.com"}, "the base URL must not contain credentials"),
    ({"app_key": "k" * 201}, "Ensure this value has at most 200 characters"),
    ({"app_token": "t" * 501}, "Ensure this value has at most 500 characters"),
    ({"app_token": "two words"}, "app token contains a space"),
    ({"erp-0-url": f"https://user:{SECRET}@erp.example.com/orders"}, "the ERP URL must not contain credentials"),
    ({"erp-0-url": f"https://erp.example.com/o?api_key={SECRET}"}, "parameter 'api_key' looks like a secret"),
    ({"erp-0-url": "https://erp.example.com/" + "a" * 300}, "Ensure this value has at most 200 characters"),
    ({"erp-0-connector": "builtins.input"}, "no ERP connector at 'builtins.input'"),
    ({"erp-0-connector": "os.system"}, "no ERP connector at 'os.system'"),
    ({"erp-0-connector": "c" * 201}, "Ensure this value has at most 200 characters"),
    ({"erp-0-timeout_seconds": "0"}, TIMEOUT),
    ({"erp-0-timeout_seconds": "1e308"}, TIMEOUT),
    ({"erp-0-timeout_seconds": "121"}, TIMEOUT),
    ({"erp-0-timeout_seconds": "nan"}, "Enter a number"),
    ({"erp-0-timeout_seconds": "inf"}, "Enter a number"),
    ({"erp-0-new_headers": "X-Api-Key: a\x07b"}, "the ERP header X-Api-Key contains a line break or control"),
    ({"erp-0-new_headers": "no colon here"}, "an ERP header must look like"),
]


@pytest.mark.parametrize("overrides, expected", STORE_FORM_REFUSED)
def test_the_admin_refuses_it_on_the_store_page_and_changes_nothing(admin_client_hub, store, overrides, expected):
    before = _snapshot()

    response = admin_client_hub.post(change_url(store), store_form(store, **{"app_key": "vtexappkey-other-Y", **overrides}))

    assert response.status_code == 200  # the form again, with the error on its field
    assert expected in _form_errors(response)
    assert SECRET not in _form_errors(response)  # (the field itself shows back what was just typed)
    assert _snapshot() == before


def _add_form(**overrides: str) -> dict:
    data = {"name": "shop", "account": "shop", "environment": "vtexcommercestable", "base_url": "",
            "app_key": "vtexappkey-shop-X", "app_token": "tok-1", "enabled": "on",
            "erp-TOTAL_FORMS": "1", "erp-INITIAL_FORMS": "0", "erp-MIN_NUM_FORMS": "0", "erp-MAX_NUM_FORMS": "1",
            "erp-0-url": ERP_URL, "erp-0-timeout_seconds": "20", "erp-0-connector": "orders.erp.HttpErpConnector",
            "erp-0-new_headers": "Authorization: Bearer x", "_save": "Save"}
    return data | overrides


@pytest.mark.parametrize("overrides, expected", [
    ({"account": "evil.com#"}, "is not a VTEX account name"),
    ({"erp-0-connector": "builtins.input"}, "no ERP connector at 'builtins.input'"),
    ({"erp-0-timeout_seconds": "1e308"}, TIMEOUT),
])
def test_the_admin_refuses_it_on_the_add_page_and_creates_nothing(admin_client_hub, overrides, expected):
    response = admin_client_hub.post(reverse("admin:core_store_add"), _add_form(**overrides))

    assert response.status_code == 200
    assert expected in _form_errors(response)
    assert Store.objects.count() == 0 and ErpConnection.objects.count() == 0


def test_the_admin_adds_a_valid_store_with_an_allowed_connector(admin_client_hub, settings):
    response = admin_client_hub.post(reverse("admin:core_store_add"), _add_form(
        **{"erp-0-connector": "tests.orders.connectors.TaggingConnector"}))

    assert response.status_code == 302, _form_errors(response)
    erp = ErpConnection.objects.get(store__name="shop")
    assert erp.connector == "tests.orders.connectors.TaggingConnector" and erp.headers == {"Authorization": "Bearer x"}
