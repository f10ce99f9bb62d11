"""/healthz: what a load balancer sees, with the dashboard's late/down rules."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from core.models import Store
from orders.models import OrderSync
from tests.conftest import TOKEN
from tests.deploy.conftest import ROOT
from tests.helpers import run_sync

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_answers_200_without_login_when_every_job_is_fresh(client, store):
    run_sync()

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]  # a monitor must never read a cached verdict
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    [acme] = body["stores"]
    assert acme["name"] == "acme"
    for job in (acme["pull"], acme["dispatch"]):
        assert job["status"] == "ok" and 0 <= job["seconds"] < settings.HUB_LATE_AFTER_SECONDS


def test_it_answers_503_when_a_stores_last_pull_is_older_than_the_down_limit(client, store, caplog):
    run_sync()
    Store.objects.filter(pk=store.pk).update(
        last_pull_at=timezone.now() - timedelta(seconds=settings.HUB_DOWN_AFTER_SECONDS + 60))

    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.get("/healthz")

    assert response.status_code == 503
    assert not caplog.records  # a monitor probing every few seconds must not flood the log with errors
    body = response.json()
    assert body["status"] == "down"
    assert body["stores"][0]["pull"]["status"] == "down"
    assert body["stores"][0]["pull"]["seconds"] > settings.HUB_DOWN_AFTER_SECONDS
    assert body["stores"][0]["dispatch"]["status"] == "ok"
    assert body["stores"][0]["health"] == "down"  # the dashboard's verdict, with its cause in the hub's words
    assert "pull" in body["stores"][0]["cause"]


def test_a_late_job_or_a_disabled_store_does_not_fail_it(client, store):
    run_sync()
    old = timezone.now() - timedelta(seconds=settings.HUB_DOWN_AFTER_SECONDS + 60)
    late = timezone.now() - timedelta(seconds=settings.HUB_LATE_AFTER_SECONDS + 5)
    Store.objects.filter(pk=store.pk).update(last_dispatch_at=late)
    Store.objects.create(name="closed", account="closed", app_key="k", app_token="t", enabled=False,
                         last_pull_at=old, last_dispatch_at=old)

    response = client.get("/healthz")

    assert response.status_code == 200, response.json()
    by_name = {s["name"]: s for s in response.json()["stores"]}
    assert by_name["acme"]["dispatch"]["status"] == "late"
    assert by_name["closed"]["pull"]["status"] == "disabled"


def test_it_shows_no_secret_and_no_customer_data(client, sandbox, store):
    sandbox.create_orders(3)
    run_sync()
    orders = list(OrderSync.objects.values_list("order_id", flat=True))
    assert orders  # there is customer data in the database to leak

    text = client.get("/healthz").content.decode()

    for secret in (TOKEN, "erp-secret-9931", store.app_key):
        assert secret not in text
    assert "@" not in text  # no email
    assert not [order_id for order_id in orders if order_id in text]
    assert set(json.loads(text)) == {"status", "database", "stores"}


def test_it_answers_503_when_the_database_does_not_answer(tmp_path):
    # A real process whose database cannot be opened: nothing is faked.
    code = ("import django; django.setup()\n"
            "from django.test import Client\n"
            "r = Client().get('/healthz')\n"
            "print(r.status_code, r.content.decode())\n")
    env = {"DJANGO_SETTINGS_MODULE": "integrationhub.settings", "DJANGO_ENV_FILE": "/dev/null",
           "DJANGO_SECRET_KEY": "x" * 50, "DJANGO_ALLOWED_HOSTS": "testserver",
           "HUB_ENCRYPTION_KEYS": ",".join(settings.HUB_ENCRYPTION_KEYS),
           "DATABASE_URL": f"sqlite:///{tmp_path}/missing-dir/db.sqlite3", "PATH": "/usr/bin:/bin"}

    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)

    status, _, body = result.stdout.strip().partition(" ")
    assert status == "503", result.stdout + result.stderr
    assert json.loads(body) == {"status": "down", "database": "error: OperationalError", "stores": []}


def test_it_is_not_redirected_to_https_while_the_admin_is(client, settings):
    settings.SECURE_SSL_REDIRECT = True  # the production default; settings_test turns it off

    assert client.get("/admin/login/").status_code == 301
    assert client.get("/healthz").status_code == 200
