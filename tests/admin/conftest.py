"""Staff users, one per group the migrations create, each with a logged-in Django test client."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, User
from django.test import Client

_groups_migration = importlib.import_module("orders.migrations.0003_staff_groups")


def _staff(username: str, group: str) -> User:
    if not Group.objects.filter(name=group).exists():
        # Transactional tests flush the tables between tests, data migrations included.
        _groups_migration.create_groups(apps, None)
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
