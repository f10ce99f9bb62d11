"""feeds 0015: VTEX's answer to a push and the queue check's error, once one prefixed field, are two fields."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from feeds.models import FeedConfig

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("feeds", "0014_store_moved_to_core")]
PUSHED = datetime(2026, 11, 1, tzinfo=timezone.utc)


def test_the_prefixed_answers_are_split_into_their_own_fields():
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    try:
        executor.migrate(BEFORE)
        old = MigrationExecutor(connection).loader.project_state(BEFORE).apps
        Store, Config = old.get_model("core", "Store"), old.get_model("feeds", "FeedConfig")
        answers = {"accepted": ("VTEX accepted it: HTTP 200", PUSHED), "refused": ("REFUSED: HTTP 400 bad filter", PUSHED),
                   "check": ("queue check failed: HTTP 503", PUSHED), "never": ("", None)}
        for name, (answer, pushed_at) in answers.items():
            store = Store.objects.create(name=name, account=name, app_key="k", app_token="t")
            Config.objects.create(store=store, vtex_answer=answer, pushed_at=pushed_at)
    finally:
        MigrationExecutor(connection).migrate(leaves)

    split = {config.store.name: (config.push_accepted, config.vtex_answer, config.queue_check_error)
             for config in FeedConfig.objects.select_related("store")}
    assert split == {
        "accepted": (True, "VTEX accepted it: HTTP 200", ""),
        "refused": (False, "HTTP 400 bad filter", ""),
        "check": (True, "", "HTTP 503"),  # the check had overwritten the push's answer
        "never": (None, "", ""),
    }
