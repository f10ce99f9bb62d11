"""The store's models moved from feeds to core (core 0001, orders 0010, feeds 0014): in the state only.

An installation migrated before the move keeps its rows, and its staff groups keep their rights, now named core.*.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from core.models import Store
from tests.admin.conftest import staff_groups_recreate

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_THE_MOVE = [("feeds", "0013_store_erp_api_key"), ("orders", "0009_erprequest")]
BEFORE_THE_GROUPS = [("orders", "0002_alter_ordersync_options_and_more")]


def _migrate(targets: list[tuple[str, str | None]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    ContentType.objects.clear_cache()  # the migrations renamed content types behind the cache's back
    return executor


def _leaves() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def _rights() -> dict[str, set[str]]:
    return {group.name: {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
            for group in Group.objects.prefetch_related("permissions__content_type")}


def test_a_database_migrated_before_the_move_keeps_its_stores_and_its_groups_rights():
    leaves = _leaves()
    try:
        executor = _migrate([*BEFORE_THE_MOVE, ("core", None)])
        old = executor.loader.project_state(BEFORE_THE_MOVE).apps
        store = old.get_model("feeds", "Store").objects.create(name="legacy", account="legacy", app_key="k",
                                                                app_token="legacy-token-55")
        old.get_model("feeds", "ErpConnection").objects.create(store=store, url="https://erp.example.com/orders")
        content_type, _ = old.get_model("contenttypes", "ContentType").objects.get_or_create(app_label="feeds",
                                                                                             model="store")
        change_store, _ = old.get_model("auth", "Permission").objects.get_or_create(
            content_type=content_type, codename="change_store", defaults={"name": "Can change store"})
        group = old.get_model("auth", "Group").objects.create(name="Store keepers")
        group.permissions.add(change_store)
        old.get_model("auth", "User").objects.create(username="kim", is_staff=True).groups.add(group)
    finally:
        _migrate(leaves)

    legacy = Store.objects.get(name="legacy")
    assert legacy.pk == store.pk and legacy.app_token == "legacy-token-55"
    assert legacy.erp.url == "https://erp.example.com/orders"
    kim = User.objects.get(username="kim")
    assert kim.has_perm("core.change_store") and not kim.has_perm("feeds.change_store")
    assert _rights()["Store keepers"] == {"core.change_store"}
    assert not ContentType.objects.filter(app_label="feeds", model__in=["store", "erpconnection", "joblease",
                                                                         "callcount", "vtexratelimit"]).exists()


def test_the_staff_groups_the_tests_recreate_are_the_ones_the_migrations_make():
    leaves = _leaves()
    Group.objects.all().delete()
    try:
        _migrate(BEFORE_THE_GROUPS)
    finally:
        _migrate(leaves)  # orders 0003, 0005 and 0007 make the groups again, then core 0001 moves the store's rights
    made = _rights()
    Group.objects.all().delete()

    staff_groups_recreate()

    assert {"core.change_store", "core.run_jobs", "core.manage_jobs"} <= made["Administrator"]
    assert "core.run_jobs" in made["Operator"] and "core.view_store" in made["Viewer"]
    assert _rights() == made
