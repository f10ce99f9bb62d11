"""Staff users, one per group the migrations create, each with a logged-in Django test client."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
from django.apps import apps
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.contrib.messages import get_messages
from django.http import HttpResponse
from django.test import Client
from django_q.conf import Conf

_groups_migration = importlib.import_module("orders.migrations.0003_staff_groups")
_manage_jobs_migration = importlib.import_module("orders.migrations.0005_manage_jobs_permission")
_alerts_migration = importlib.import_module("orders.migrations.0007_alert_permissions")
_moved_to_core = importlib.import_module("core.migrations.0001_initial").MOVED


def _named_today(name: str) -> str:
    """A permission as those migrations name it ("feeds.change_store") -> its name since core 0001 moved the
    store's content types to core ("core.change_store"). run_jobs and manage_jobs are on the store's."""
    app_label, codename = name.split(".")
    model = "store" if codename in ("run_jobs", "manage_jobs") else codename.split("_", 1)[1]
    return f"core.{codename}" if app_label == "feeds" and model in _moved_to_core else name


def _permission(name: str) -> Permission:
    app_label, codename = _named_today(name).split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def staff_groups_recreate() -> None:
    """The groups as the migrations leave them: 0003 makes them, 0005 grants manage_jobs (and withdraws the
    schedule rights), 0007 the alert pages, and core 0001 renames the store's permissions to core.*.

    Rebuilt from those migrations' lists rather than by running them: their code names feeds' content types,
    which the live models no longer have. tests/core/test_model_move.py checks both give the same groups.
    """
    for config in apps.get_app_configs():
        create_permissions(config, verbosity=0)  # what post_migrate makes; a flush may have removed them
    label, model, codename, description = _manage_jobs_migration.MANAGE_JOBS  # not in Meta: made by 0005 itself
    manage_jobs = _named_today(f"{label}.{codename}")
    Permission.objects.get_or_create(content_type=ContentType.objects.get(app_label=manage_jobs.split(".")[0],
                                                                          model=model),
                                     codename=codename, defaults={"name": description})
    made = _groups_migration
    view = [f"{name.split('.')[0]}.view_{name.split('.')[1]}" for name in made.VIEW_MODELS]
    withdrawn = {f"{app}.{name}" for app, name in _manage_jobs_migration.WITHDRAWN}
    levels = {"Viewer": view, "Operator": view + made.OPERATOR_EXTRA,
              "Administrator": [*view, *made.OPERATOR_EXTRA, *made.ADMIN_EXTRA, manage_jobs]}
    for group_name, names in levels.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        names = [*names, *_alerts_migration.GRANTS.get(group_name, [])]
        group.permissions.set([_permission(name) for name in names if name not in withdrawn])


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
