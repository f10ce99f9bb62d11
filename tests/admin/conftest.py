"""Staff users, one per group the migrations create, each with a logged-in Django test client."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, User
from django.contrib.messages import get_messages
from django.http import HttpResponse
from django.test import Client
from django_q.conf import Conf

_groups_migration = importlib.import_module("orders.migrations.0003_staff_groups")
_manage_jobs_migration = importlib.import_module("orders.migrations.0005_manage_jobs_permission")
_alerts_migration = importlib.import_module("orders.migrations.0007_alert_permissions")


def staff_groups_recreate() -> None:
    """The groups as the migrations leave them: 0003 makes them, 0005 grants feeds.manage_jobs, 0007 the alert pages."""
    _groups_migration.create_groups(apps, None)
    _manage_jobs_migration.grant_manage_jobs(apps, None)
    _alerts_migration.grant_alert_permissions(apps, None)


def _staff(username: str, group: str) -> User:
    if not Group.objects.filter(name=group).exists():
        # Transactional tests flush the tables between tests, data migrations included.
        staff_groups_recreate()
    user = User.objects.create_user(username=username, password="pw-" + username, is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def viewer(transactional_db) -> User:
    return _staff("vera-viewer", "Viewer")


@pytest.fixture
def operator(transactional_db) -> User:
    return _staff("otto-operator", "Operator")


@pytest.fixture
def administrator(transactional_db) -> User:
    return _staff("ada-admin", "Administrator")


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer_client(viewer) -> Client:
    return _client(viewer)


@pytest.fixture
def operator_client(operator) -> Client:
    return _client(operator)


@pytest.fixture
def admin_client_hub(administrator) -> Client:
    return _client(administrator)


@pytest.fixture
def staff_member(db) -> Callable[[str], User]:
    """Makes a staff user of the named group (Viewer, Operator, Administrator) in a rolled-back test."""
    def make(group: str) -> User:
        return _staff(f"{group.lower()}-{User.objects.count() + 1}", group)
    return make


@pytest.fixture
def jobs_queued(monkeypatch) -> None:
    """Tasks go to django-q2's ORM queue (OrmQ rows) instead of running inline as settings_test's `sync` makes them."""
    monkeypatch.setattr(Conf, "SYNC", False)  # async_task reads Conf.SYNC on every call


def action_ran(response: HttpResponse) -> bool:
    """Whether Django ran the admin action a changelist POST named (not followed), or turned it away.

    An action the user may not use is not one of the form's choices: Django redirects back with
    "No action selected.", or, when the user has no action at all, just renders the list again. Post
    with a fresh client each time: a message left unread by an earlier request would be read here too.
    """
    if response.status_code == 302:
        return "No action selected." not in [str(m) for m in get_messages(response.wsgi_request)]
    if response.status_code == 200:
        return "cl" not in (getattr(response, "context_data", None) or {})  # an action's own page (a confirmation)
    return False
